"""Opening the daemon's live progress page in the web browser, without a word on stderr.

Inkscape shows only "please wait" while the extension runs; the daemon serves a page per job
that draws the strokes as they improve. Python's webbrowser starts the browser as a child
process that inherits our stdout (which carries the document back to Inkscape) and stderr
(where any line opens a dialog), and some browsers print there ("Opening in existing browser
session."). So both are pointed at the null device while the browser starts; the children keep
that. A browser that cannot be started is silently skipped: the sketch matters more.
"""

from __future__ import annotations

import contextlib
import os
import sys
import webbrowser
from collections.abc import Iterator, Sequence


def page_url(daemon_url: str, job_ids: Sequence[str]) -> str:
    """The page of the one job, or the daemon's job list for several."""
    base = daemon_url.strip().rstrip("/")
    return f"{base}/jobs/{job_ids[0]}" if len(job_ids) == 1 else f"{base}/"


@contextlib.contextmanager
def _silenced_std_streams() -> Iterator[None]:
    """File descriptors 1 and 2 on the null device for the duration (and for children started
    meanwhile); Python-level streams are flushed first so nothing of ours is lost or reordered."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                saved.append((fd, os.dup(fd)))
                os.dup2(null, fd)
        yield
    finally:
        for fd, copy in saved:
            with contextlib.suppress(OSError):
                os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


def open_page(url: str) -> bool:
    """Open ``url`` in the user's browser; True when a browser accepted it."""
    try:
        with (
            open(os.devnull, "w") as sink,
            _silenced_std_streams(),
            contextlib.redirect_stderr(sink),
            contextlib.redirect_stdout(sink),
        ):
            return bool(webbrowser.open(url, new=2))
    except Exception:  # no browser must never fail a sketch
        return False
