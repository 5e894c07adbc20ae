"""``python -m skretrieval`` runs the command line."""

from skretrieval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
