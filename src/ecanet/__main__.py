"""``python -m ecanet`` (and ``torchrun -m ecanet``) runs the command-line interface."""

from ecanet.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
