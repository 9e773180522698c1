"""Pure core: models, lifecycle rules and pipeline stages. No I/O here (see pyproject's import contracts)."""
