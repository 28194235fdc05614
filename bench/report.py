"""What every benchmark does last: write its figures as JSON to ``--out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: str | Path, report: dict[str, Any]) -> Path:
    """Write ``report`` to ``out`` (its folder made as needed) and say where; the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path
