"""The command that starts the daemon on this machine, as the error messages should say it.

`clipasso` is often not on PATH (``make demo`` puts it in the project's venv), so telling the
user to run ``clipasso serve`` would send them looking. ``clipasso install-extension`` records
the absolute path of the ``clipasso`` program it belongs with in a small JSON file beside
extension.inx; the extension reads it back. Without a record (a zip install, an old install)
the plain ``clipasso serve`` is said.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys

#: The record's file name, in the extension's folder (beside extension.inx).
RECORD_NAME = "daemon-command.json"
FALLBACK = "clipasso serve"


def extension_folder() -> str:
    """The folder holding this package (the installed extension's folder, or a checkout).

    Not symlink-resolved, so a ``--link`` install finds the record of its own folder."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_program() -> str | None:
    """The ``clipasso`` program next to the running Python (a venv's bin/ or Scripts/),
    else the one on PATH; None when there is neither."""
    folder = os.path.dirname(os.path.abspath(sys.executable))
    for name in ("clipasso", "clipasso.exe"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("clipasso")
    return os.path.abspath(found) if found else None


def write_record(folder: str | os.PathLike, program: str | None) -> str | None:
    """Record ``program`` (an absolute path) in ``folder``; nothing when it is None."""
    if not program:
        return None
    path = os.path.join(os.fspath(folder), RECORD_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"program": program}, handle)
        handle.write("\n")
    return path


def serve_command(folder: str | None = None) -> str:
    """``<recorded program> serve`` when the record names a program that still exists,
    else ``clipasso serve``."""
    path = os.path.join(folder or extension_folder(), RECORD_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            program = json.load(handle).get("program")
    except (OSError, ValueError, AttributeError):
        return FALLBACK
    if not isinstance(program, str) or not os.path.isfile(program):
        return FALLBACK
    return f"{shlex.quote(program)} serve"
