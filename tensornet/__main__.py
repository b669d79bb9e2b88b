"""``python -m tensornet``: the same command line as the ``tensornet`` script."""

from .cli import main

if __name__ == "__main__":  # importing this module (doctest collection, tooling) runs nothing
    raise SystemExit(main())
