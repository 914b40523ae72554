"""``python -m nautilus_dsm.cli``: the ``nautilus-dsm`` console script."""

from nautilus_dsm.cli import main

if __name__ == "__main__":
    main()
