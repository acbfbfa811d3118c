"""``python -m idhhpc.data.phantoms``: the documented command, kept working; the generator lives in
:mod:`idhhpc.phantoms`, apart from the real-data path."""

from idhhpc.phantoms.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
