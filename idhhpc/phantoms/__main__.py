"""``python -m idhhpc.phantoms OUT --patients N [--seed S] [--shape X Y Z]``."""

from idhhpc.phantoms.cli import main

raise SystemExit(main())
