"""Whole-document comparisons, the way Inkscape's own extensions are tested.

inkex's ComparisonMixin runs the effect on each document of ``data/svg/sketch-*.svg`` with each
argument set below and compares the output with a stored file under ``data/refs/``, so any
change to what the extension inserts shows up as a diff a reviewer can read. The daemon is the
fake one (real HTTP on loopback) with fixed strokes and counter job ids, so the output is
deterministic. The stored files are shared by inkex 1.4 and Inkscape's bundled 1.2.

Regenerate them after an intended change (then read the diff) with::

    make update-extension-refs

which runs this file with ``EXPORT_COMPARE=3`` (inkex's "overwrite the reference" mode).
"""

from __future__ import annotations

import re

from fake_daemon import FakeDaemon, FakeDaemonServer
from inkex.tester import ComparisonMixin, TestCase
from inkex.tester.filters import Compare
from lxml import etree

from inkscape_clipasso.clipasso_sketch import ClipassoSketch


class CompareWithoutWaits(Compare):
    """The layer's description says how long the run waited, and the layer records the fake
    daemon's URL (a free port): those vary, the rest not."""

    @staticmethod
    def filter(contents):
        contents = re.sub(rb"http://127\.0\.0\.1:\d+", b"http://127.0.0.1:PORT", contents)
        return re.sub(rb"Waited [^.<]*\.", b"Waited (some time).", contents)


class CompareIndented(Compare):
    """One element per line, indented: inkex writes the new layers on one line, which would
    make every change a one-line diff of kilobytes."""

    @staticmethod
    def filter(contents):
        root = etree.fromstring(contents, etree.XMLParser(remove_blank_text=True))
        etree.indent(root, space="  ")
        return etree.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


class TestSketchDocuments(ComparisonMixin, TestCase):
    effect_class = ClipassoSketch
    compare_file = (
        "svg/sketch-mm.svg",
        "svg/sketch-px.svg",
        "svg/sketch-viewbox.svg",
        "svg/sketch-nested-rotated.svg",
        "svg/sketch-clipped.svg",
        "svg/sketch-linked.svg",
    )
    comparisons = (
        ("--id=img1", "--levels=2,3", "--visible_level=all"),
        (
            "--id=img1",
            "--levels=2",
            "--clip=false",
            "--width_mode=document",
            "--width=0.5",
            "--photo=lock",
        ),
    )
    compare_filters = (CompareWithoutWaits(), CompareIndented())
    # the stored files are already filtered (readable); the output is filtered to compare
    compare_filter_save = True

    def setUp(self):
        super().setUp()
        self._server = FakeDaemonServer(FakeDaemon())
        self.fake = self._server.__enter__()

    def tearDown(self):
        self._server.__exit__(None, None, None)
        super().tearDown()

    def assertEffect(self, *filename, **kwargs):  # noqa: N802 - inkex's name
        """Every run talks to this test's fake daemon and opens no browser; a fresh daemon
        per run keeps the job ids the same whatever the order."""
        self._server.__exit__(None, None, None)
        self._server = FakeDaemonServer(FakeDaemon())
        self.fake = self._server.__enter__()
        args = [*kwargs.pop("args", []), f"--url={self.fake.url}", "--live_view=false"]
        return super().assertEffect(*filename, args=args, **kwargs)
