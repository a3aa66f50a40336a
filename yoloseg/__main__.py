"""`python -m yoloseg ...` runs the `yolo` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
