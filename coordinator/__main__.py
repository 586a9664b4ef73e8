"""``python -m coordinator`` runs the CLI."""

from coordinator.cli import main

main()
