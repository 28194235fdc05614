"""What every benchmark does last: write its figures as JSON to ``--out``."""

from __future__ import annotations

import argparse
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


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of the loss model, float32 unless asked: the figures the README
    publishes were measured in float32, and the product's "auto" is bf16 on CPUs that compute
    it natively, which would change them without saying so."""
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "auto"),
        help="the loss model's arithmetic (default fp32; bf16: bf16 autocast)",
    )
