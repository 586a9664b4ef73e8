"""``python -m coordinator`` runs the CLI."""

from coordinator.cli import main

# Guarded: multiprocessing's spawn start method (``coordinator demo``) imports the main
# module again in each child, which must not run the CLI a second time.
if __name__ == "__main__":
    main()
