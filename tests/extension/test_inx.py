"""extension.inx agrees with the script's argument parser, and says what the issue asks."""

from __future__ import annotations

import os
import unittest

from ext_helpers import REPO
from inkex.tester.inx import InxMixin
from lxml import etree

from inkscape_clipasso import protocol
from inkscape_clipasso.clipasso_sketch import ClipassoSketch

INX = REPO / "extension.inx"
NS = {"inx": "http://www.inkscape.org/namespace/inkscape/extension"}


class TestInx(InxMixin, unittest.TestCase):
    def setUp(self):
        # inkex resolves the <command> path from the working directory (the .inx's folder).
        self._cwd = os.getcwd()
        os.chdir(REPO)

    def tearDown(self):
        os.chdir(self._cwd)

    def test_params_match_the_argument_parser(self):
        self.assertInxIsGood(str(INX))

    def test_schema(self):
        if not hasattr(self, "assertInxSchemaValid"):
            self.skipTest("this inkex (1.2) has no inx schema check")
        self.assertInxSchemaValid(str(INX))


def inx() -> etree._Element:
    return etree.parse(str(INX)).getroot()


def test_menu_id_and_preview():
    root = inx()
    assert root.findtext("inx:id", namespaces=NS) == "org.clipasso.clipasso_sketch"
    assert ClipassoSketch.__name__ == "ClipassoSketch"  # what inkex expects for that id
    effect = root.find("inx:effect", NS)
    assert effect.get("needs-live-preview") == "false"
    submenus = effect.findall("inx:effects-menu/inx:submenu", NS)
    assert [s.get("name") for s in submenus] == ["CLIPasso"]


def test_command_points_at_the_script():
    command = inx().find("inx:script/inx:command", NS)
    assert command.get("location") == "inx" and command.get("interpreter") == "python"
    assert (REPO / command.text).is_file()


def test_pages_and_defaults():
    root = inx()
    pages = root.findall("inx:param[@type='notebook']/inx:page", NS)
    assert [p.get("name") for p in pages] == ["sketch", "daemon", "output", "help"]

    def default(name):
        return root.find(f".//inx:param[@name='{name}']", NS).text

    assert default("levels") == "4,8,16,32"
    assert default("url") == protocol.DEFAULT_URL
    assert int(default("iterations")) == protocol.SketchSettings().iterations
    assert int(default("seeds")) == protocol.SketchSettings().seeds
    assert default("loss_model") == protocol.DEFAULT_LOSS_MODEL
    assert default("saliency_model") == protocol.DEFAULT_SALIENCY_MODEL
    help_text = " ".join(t for t in pages[3].itertext())
    assert "clipasso serve" in help_text
