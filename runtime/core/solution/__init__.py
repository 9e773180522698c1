"""The solution model and its readers. See model.py for the conventions."""

from runtime.core.solution.model import SolutionDocument

__all__ = ["SolutionDocument"]
