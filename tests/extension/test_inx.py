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
UPDATE_INX = REPO / "extension_update.inx"
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

    def test_update_params_match_the_argument_parser(self):
        self.assertInxIsGood(str(UPDATE_INX))

    def test_update_schema(self):
        if not hasattr(self, "assertInxSchemaValid"):
            self.skipTest("this inkex (1.2) has no inx schema check")
        self.assertInxSchemaValid(str(UPDATE_INX))


def test_update_sketches_runs_without_a_dialog():
    """Extensions > CLIPasso > Update sketches: its own effect, no dialog (every param hidden),
    no live preview, the same submenu, its own script."""
    from inkscape_clipasso.clipasso_update import ClipassoUpdate

    root = etree.parse(str(UPDATE_INX)).getroot()
    assert root.findtext("inx:id", namespaces=NS) == "org.clipasso.clipasso_update"
    assert root.findtext("inx:name", namespaces=NS) == "Update sketches"
    assert ClipassoUpdate.__name__ == "ClipassoUpdate"  # what inkex expects for that id
    effect = root.find("inx:effect", NS)
    assert effect.get("needs-live-preview") == "false"
    submenus = effect.findall("inx:effects-menu/inx:submenu", NS)
    assert [s.get("name") for s in submenus] == ["CLIPasso"]
    params = root.findall(".//inx:param", NS)
    assert params and all(p.get("gui-hidden") == "true" for p in params)
    command = root.find("inx:script/inx:command", NS)
    assert command.get("location") == "inx" and command.get("interpreter") == "python"
    assert command.text == "inkscape_clipasso/clipasso_update.py"
    assert (REPO / command.text).is_file()


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
    assert float(default("poll_interval")) == 1.0
    assert int(default("timeout")) == 86400  # the safety net; the time limit is the wait
    hidden = {p.get("name") for p in root.iterfind(".//inx:param[@gui-hidden='true']", NS)}
    assert hidden == {"loss_model", "saliency_model", "poll_interval"}
    photo = root.find(".//inx:param[@name='photo']", NS)
    assert [o.get("value") for o in photo.findall("inx:option", NS)] == ["keep", "lock", "hide"]
    help_text = " ".join(t for t in pages[3].itertext())
    assert "clipasso serve" in help_text
    assert "clipasso install-extension" in help_text


def _parser_defaults() -> dict[str, object]:
    parser = ClipassoSketch().arg_parser
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_every_param_is_an_argument_with_the_same_default():
    """Our own check (both inkex versions): Inkscape passes every param as --name=value."""
    actions = _parser_defaults()
    params = inx().iterfind(".//inx:param", NS)
    for param in params:
        name, kind = param.get("name"), param.get("type")
        assert name in actions, f"{name} is in the .inx but not in the argument parser"
        action = actions[name]
        if kind == "notebook":
            pages = [page.get("name") for page in param.findall("inx:page", NS)]
            assert action.default == pages[0]
            continue
        text = param.text or ""
        if kind == "optiongroup":
            values = [option.get("value") for option in param.findall("inx:option", NS)]
            assert list(action.choices) == values and action.default == values[0], name
        elif kind == "bool":
            assert action.default is (text == "true"), name
        elif kind == "color":
            # Inkscape reads "0xRRGGBBAA" and passes the colour as a decimal RGBA integer.
            assert action.type(str(int(text, 0))) == action.default, name
        elif kind == "int":
            assert action.type is int and action.default == int(text), name
        elif kind == "float":
            assert action.type is float and action.default == float(text), name
        else:
            assert action.default == text, name


def test_new_settings_sit_on_their_pages():
    root = inx()
    pages = {
        page.get("name"): page for page in root.findall("inx:param[@type='notebook']/inx:page", NS)
    }

    def param(page: str, name: str) -> etree._Element:
        found = pages[page].find(f"inx:param[@name='{name}']", NS)
        assert found is not None, f"{name} is not on the {page} page"
        return found

    limits = [o.get("value") for o in param("sketch", "time_limit").findall("inx:option", NS)]
    assert limits == ["600", "120", "3600", "0"]  # 10 min (default), 2 min, 1 h, no limit
    when = [o.get("value") for o in param("sketch", "when").findall("inx:option", NS)]
    assert when == ["auto", "wait", "now"]  # automatic (default): now beyond about a minute
    assert param("daemon", "live_view").text == "true"
    assert param("output", "clip").text == "true"
    choices = [o.get("value") for o in param("output", "on_time_limit").findall("inx:option", NS)]
    assert choices == ["keep", "cancel"]


def test_gallery_thumbnail_and_tip():
    """Inkscape 1.4's Extensions Gallery shows a 70x60 thumbnail it finds beside the .inx under
    the .inx's own name (an <icon> element would do too, but inkex's schema rejects it), and
    the menu tip as the entry's description; 1.2 shows the tip in the status bar."""
    icon = etree.parse(str(INX.with_suffix(".svg"))).getroot()
    assert icon.tag == "{http://www.w3.org/2000/svg}svg"
    assert (icon.get("width"), icon.get("height"), icon.get("viewBox")) == ("70", "60", "0 0 70 60")
    tip = inx().findtext("inx:effect/inx:menu-tip", namespaces=NS)
    assert tip and "CLIPasso daemon" in tip
