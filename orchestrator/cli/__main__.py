"""``python -m orchestrator.cli``: the same as the ``orchestrator`` console script."""

from orchestrator.cli import main

main()
