"""Refine from my strokes, whole documents (issue 18 part 3), against the fake daemon.

``data/svg/refine-edited.svg`` is a finished sketch (levels 2 and 3) of a photo in a translated
layer, whose 3-stroke level the user then edited (one stroke moved and restyled, one deleted);
it is refined from that level, keeping the user's strokes and adding 2, and refining all.
``data/svg/refine-paths.svg`` has the user's own lines (a relative quadratic with a smooth
continuation, a polyline and a rect in a scaled group, a lone dot that gives no stroke) in a
translated layer over a photo in a scaled layer with ``xMinYMax slice``. The stored outputs
show the job's start strokes (in the record's settings), the new layer just above the user's,
the kept strokes as verbatim copies and the new strokes drawn. Regenerate them like
test_comparison.py's (``make update-extension-refs``), then read the diff.
"""

from __future__ import annotations

from fake_daemon import FakeDaemon, FakeDaemonServer
from inkex.tester import ComparisonMixin, TestCase
from test_comparison import CompareIndented, CompareWithoutWaits

from inkscape_clipasso.clipasso_sketch import ClipassoSketch

KEEP = ("--start=keep", "--add_strokes=2")
REFINE = ("--start=refine",)


class _FakeDaemonRuns:
    """As test_comparison's TestSketchDocuments: a fresh fake daemon for every run (a mixin:
    a ComparisonMixin class of its own would get inkex's default comparisons)."""

    effect_class = ClipassoSketch
    compare_filters = (CompareWithoutWaits(), CompareIndented())
    compare_filter_save = True

    def setUp(self):
        super().setUp()
        self._server = FakeDaemonServer(FakeDaemon())
        self.fake = self._server.__enter__()

    def tearDown(self):
        self._server.__exit__(None, None, None)
        super().tearDown()

    def assertEffect(self, *filename, **kwargs):  # noqa: N802 - inkex's name
        self._server.__exit__(None, None, None)
        self._server = FakeDaemonServer(FakeDaemon())
        self.fake = self._server.__enter__()
        args = [*kwargs.pop("args", []), f"--url={self.fake.url}", "--live_view=false"]
        return super().assertEffect(*filename, args=args, **kwargs)


class TestRefineEditedLevel(_FakeDaemonRuns, ComparisonMixin, TestCase):
    compare_file = ("svg/refine-edited.svg",)
    comparisons = (
        ("--id=img1", "--id=clipasso-img1-level-3", *KEEP),
        ("--id=img1", "--id=clipasso-img1-level-3", *REFINE),
    )


class TestRefineOwnPaths(_FakeDaemonRuns, ComparisonMixin, TestCase):
    compare_file = ("svg/refine-paths.svg",)
    comparisons = (("--id=img1", "--id=mine", *KEEP), ("--id=img1", "--id=mine", *REFINE))
