"""Update sketches, whole documents (issue 18): in place, and never over an edited level.

``data/svg/update-running.svg`` is what Sketch inserted with "Now, update later" (the best
strokes at step 1 of a job still running; made with the fake daemon, its URL written as
``PORT``); ``update-edited.svg`` is the same after the user moved one stroke of the 3-stroke
level. The fake daemon then has the job finished, with other strokes than the snapshot's.
Expected: every untouched level holds the finished strokes in the same layer and place, the
names no longer say running; the edited level is left exactly as it is and the finished
strokes of that level go into a hidden layer just above it. Regenerate the stored outputs with
``EXPORT_COMPARE=3`` like test_comparison.py's, then read the diff.
"""

from __future__ import annotations

import os
import re

import inkex
from fake_daemon import FakeDaemon, FakeDaemonServer
from inkex.tester import ComparisonMixin, TestCase
from inkex.tester.filters import Compare
from test_comparison import CompareIndented

from inkscape_clipasso import protocol
from inkscape_clipasso.clipasso_update import ClipassoUpdate
from inkscape_clipasso.layer_state import sketch_layers


class CompareWithoutPort(Compare):
    """The fake daemon listens on a free port; the documents say ``PORT``."""

    @staticmethod
    def filter(contents):
        return re.sub(rb"http://127\.0\.0\.1:\d+", b"http://127.0.0.1:PORT", contents)


def finished_strokes(result):
    """The finished job's strokes differ from the snapshot's: one pixel to the right."""
    if result.get("partial"):
        return result
    for level in result["levels"]:
        for path in level["paths"]:
            path["points"] = [[x + 1.0, y] for x, y in path["points"]]
    return protocol.validate_result(result)


def serve_documents_job(fake: FakeDaemon, document: str) -> None:
    """The fake daemon knows the documents' job, finished, with their photo and settings."""
    svg = inkex.load_svg(document).getroot()
    for _layer, record in sketch_layers(svg):
        image = svg.getElementById(record.source)
        request = protocol.JobRequest(
            image=protocol.decode_image_field(image.get("xlink:href")),
            settings=protocol.parse_settings(record.settings),
        )
        fake.jobs[record.job] = {
            "id": record.job,
            "request": request,
            "polls": 0,
            "forced_done": True,
        }


class TestUpdateDocuments(ComparisonMixin, TestCase):
    effect_class = ClipassoUpdate
    compare_file = ("svg/update-running.svg", "svg/update-edited.svg")
    comparisons = ((),)
    compare_filters = (CompareWithoutPort(), CompareIndented())
    compare_filter_save = True

    def setUp(self):
        super().setUp()
        self._server = FakeDaemonServer(FakeDaemon(result_override=finished_strokes))
        self.fake = self._server.__enter__()

    def tearDown(self):
        self._server.__exit__(None, None, None)
        super().tearDown()

    def assertEffect(self, *filename, **kwargs):  # noqa: N802 - inkex's name
        """The stored document with this test's daemon URL in place of ``PORT``."""
        with open(self.data_file(*filename), encoding="utf-8") as handle:
            text = handle.read().replace("http://127.0.0.1:PORT", self.fake.url)
        document = os.path.join(self.tempdir, os.path.basename(filename[-1]))
        with open(document, "w", encoding="utf-8") as handle:
            handle.write(text)
        serve_documents_job(self.fake, document)
        return super().assertEffect(document, **kwargs)
