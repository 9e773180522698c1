"""The pure pipeline stages: planner, sentinel, input translator (and, later, workflow and output).

Each stage returns a value or raises ``StageError``; the dispatcher is the only catch site.
"""
