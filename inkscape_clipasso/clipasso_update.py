#!/usr/bin/env python3
"""Extensions > CLIPasso > Update sketches: bring the newer strokes of running jobs in.

Sketch can insert its layers before the daemon has finished (the user chose not to wait, or
the wait ran out); those layers record their job, the daemon's URL and the settings
(layer_state). This effect, which needs no dialog, finds every such layer in the document, asks
the daemon for the job's final result or its best strokes so far, and replaces each level's
strokes in place (layer_update: a level the user edited is never overwritten).

Inkscape's contract: when nothing can be updated the run ends with AbortExtension (exit 251,
the document untouched) and a message that says why for each layer. On success nothing is
written to stderr (any line opens a dialog), except when some layers could not be updated
while others were: then one message lists those, and they are left as they are.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a file: make the folder holding the inkscape_clipasso package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from typing import Any

import inkex

from inkscape_clipasso import protocol
from inkscape_clipasso.daemon_client import (
    DaemonClient,
    DaemonError,
    DaemonRefusedError,
    DaemonTimeoutError,
    DaemonUnreachableError,
)
from inkscape_clipasso.layer_state import RUNNING, SketchRecord, sketch_layers
from inkscape_clipasso.layer_update import UpdateError, apply_result
from inkscape_clipasso.links import anchor_relative_links

#: Longest single request: the daemon answers these from memory or a small file.
REQUEST_TIMEOUT_S = 30.0
NOTHING_TO_UPDATE = (
    "This document has no CLIPasso sketch waiting for its job: nothing to update. Sketches "
    'inserted with "Now, update later" (or when the wait ran out) are updated here.'
)

NO_URL = (
    "this layer was made by an older version of the extension, which did not record the "
    "daemon's address; run Sketch again on the photo with the same settings: it takes the "
    "layer over"
)


class NothingNewerError(Exception):
    """The job is going but has nothing newer than the layer holds; not an error."""


def latest_result(client: DaemonClient, record: SketchRecord) -> dict[str, Any]:
    """The job's final result, or its best strokes so far while it runs; a job cancelled or
    interrupted in the daemon gives its best strokes as a sketch that stopped early.

    Raises NothingNewerError when there is nothing newer than the layer's, DaemonError (with a
    message for the user) when the job cannot give anything."""
    try:
        status = client.status(record.job)
    except DaemonRefusedError as exc:
        if exc.code != "not_found":
            raise
        raise DaemonError(
            f"the daemon at {client.url} does not know its job {record.job[:8]} any more (its "
            "results were cleaned up, its state folder changed, or another daemon now answers "
            "there); left as it is: run Sketch again on the photo for a new one"
        ) from None
    state = status["state"]
    if state == protocol.DONE:
        return client.result(record.job)
    if state == protocol.FAILED:
        error = status.get("error") or {}
        raise DaemonError(f"its job failed in the daemon: {error.get('message') or 'no reason'}")
    try:
        result = client.result(record.job, partial=True)
    except DaemonRefusedError as exc:
        if exc.code != "not_ready":
            raise
        if state in (protocol.QUEUED, protocol.RUNNING):
            raise NothingNewerError from None
        raise DaemonError(
            f"its job was {state} in the daemon before it had any strokes; run Sketch again"
        ) from None
    if not result.get("partial"):
        return result  # it finished meanwhile
    step = int(result.get("step") or 0)
    if state in (protocol.CANCELLED, protocol.INTERRUPTED):
        return {**result, "partial": False, "stop_reason": "cancel", "steps_run": step}
    if record.progress.step is not None and step <= record.progress.step:
        raise NothingNewerError
    return result


class ClipassoUpdate(inkex.EffectExtension):
    """The effect; its arguments mirror extension_update.inx (one hidden param)."""

    def add_arguments(self, pars) -> None:
        pars.add_argument("--token", default="", help="the daemon's token, if it has one")

    def effect(self) -> None:
        waiting = [
            (layer, record)
            for layer, record in sketch_layers(self.svg)
            if record.progress.state == RUNNING
        ]
        if not waiting:
            raise inkex.AbortExtension(NOTHING_TO_UPDATE)
        taken = {str(value) for value in self.svg.xpath("//@id")}
        clients: dict[str, DaemonClient] = {}
        down: dict[str, str] = {}  # a daemon that did not answer is not asked again
        updated, unchanged, problems = 0, [], []
        for layer, record in waiting:
            name = layer.get("inkscape:label") or layer.get("id") or "a sketch"
            if not record.url:
                problems.append(f'"{name}": {NO_URL}')
                continue
            if record.url in down:
                problems.append(f'"{name}": {down[record.url]}')
                continue
            try:
                if record.url not in clients:
                    clients[record.url] = DaemonClient(
                        record.url, self.options.token, REQUEST_TIMEOUT_S
                    )
                result = latest_result(clients[record.url], record)
                apply_result(self.svg, layer, record, result, taken)
                updated += 1
            except (DaemonUnreachableError, DaemonTimeoutError) as exc:
                down[record.url] = (
                    f"its job is on the daemon at {record.url}, which does not answer; a "
                    f"daemon at another address does not have it. {exc}"
                )
                problems.append(f'"{name}": {down[record.url]}')
            except NothingNewerError:
                unchanged.append(f'"{name}": the daemon has no newer strokes yet')
            except (DaemonError, UpdateError, ValueError) as exc:
                problems.append(f'"{name}": {exc}')
        if not updated:
            raise inkex.AbortExtension(
                "Nothing was updated.\n" + "\n".join([*problems, *unchanged])
            )
        if problems:
            # something failed: a message is due (and Inkscape shows it in a dialog)
            self.msg(
                f"Updated {updated} sketch(es); these were left as they are:\n"
                + "\n".join(problems)
            )
        # Inkscape 1.4 breaks relative links of documents under its temporary folder: links.py
        anchor_relative_links(self.svg, self.options.input_file)


def main() -> None:
    """Run the effect on the command line Inkscape gives."""
    ClipassoUpdate().run()


if __name__ == "__main__":
    main()
