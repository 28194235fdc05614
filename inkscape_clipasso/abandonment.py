"""Noticing that Inkscape gave up on us (the user pressed Cancel in its "please wait" dialog).

Inkscape's Cancel does not kill the extension's process: it stops listening and closes its end
of our stdout pipe. A script that keeps polling would keep the daemon's job alive (and a
detached job is never cancelled by the daemon's watchdog anyway). On POSIX, the write end of a
pipe whose reader is gone reports POLLERR, so polling our stdout without writing to it tells
us, and the run cancels its jobs. Anything that is not such a pipe (a file, a terminal, a
platform without poll) never counts as abandoned.
"""

from __future__ import annotations

import select
import sys


def output_closed() -> bool:
    """Whether the reader of our stdout (Inkscape) has gone away."""
    if not hasattr(select, "poll"):
        return False
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):
        return False
    return any(mask & select.POLLERR for _, mask in events)
