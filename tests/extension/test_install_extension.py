"""`clipasso install-extension`: copies, links, zips the extension where Inkscape finds it."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pytest
from ext_helpers import REPO
from lxml import etree


def command():
    """The command module, imported late: this folder must load without the daemon's package
    (under Inkscape's Python it comes from the checkout via conftest's sys.path)."""
    from clipasso_server.commands import install_extension

    return install_extension


EXPECTED = sorted(p.name for p in (REPO / "inkscape_clipasso").glob("*.py"))


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    module = command()
    module.add_arguments(parser)
    return module.run(parser.parse_args(list(argv)))


def test_copy_into_a_profile(tmp_path, capsys):
    (tmp_path / "extensions" / "clipasso" / "inkscape_clipasso" / "__pycache__").mkdir(
        parents=True
    )  # an earlier install is replaced
    assert run("--profile-dir", str(tmp_path)) == 0
    target = tmp_path / "extensions" / "clipasso"
    assert (target / "extension.inx").read_bytes() == (REPO / "extension.inx").read_bytes()
    # Inkscape 1.4's Extensions Gallery thumbnail: the .inx's name with .svg, beside it
    assert (target / "extension.svg").read_bytes() == (REPO / "extension.svg").read_bytes()
    # Extensions > CLIPasso > Update sketches
    update = (REPO / "extension_update.inx").read_bytes()
    assert (target / "extension_update.inx").read_bytes() == update
    thumbnail = (REPO / "extension_update.svg").read_bytes()
    assert (target / "extension_update.svg").read_bytes() == thumbnail
    assert sorted(p.name for p in (target / "inkscape_clipasso").iterdir()) == EXPECTED
    assert not any(p.is_symlink() for p in target.rglob("*"))
    assert "restart Inkscape" in capsys.readouterr().out


def test_link(tmp_path):
    run("--profile-dir", str(tmp_path), "--link")
    target = tmp_path / "extensions" / "clipasso"
    inx = target / "extension.inx"
    assert inx.is_symlink() and inx.resolve() == (REPO / "extension.inx").resolve()
    assert (target / "extension.svg").resolve() == (REPO / "extension.svg").resolve()
    update = target / "extension_update.inx"
    assert update.is_symlink() and update.resolve() == (REPO / "extension_update.inx").resolve()
    script = target / "inkscape_clipasso" / "clipasso_sketch.py"
    assert script.resolve() == (REPO / "inkscape_clipasso" / "clipasso_sketch.py").resolve()


def test_profile_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INKSCAPE_PROFILE_DIR", str(tmp_path / "prof"))
    run()
    assert (tmp_path / "prof" / "extensions" / "clipasso" / "extension.inx").is_file()


def test_xdg_config_home():
    env = {"XDG_CONFIG_HOME": "/cfg"}
    assert command().default_extensions_dir(env, "linux") == Path("/cfg/inkscape/extensions")
    env = {"INKSCAPE_PROFILE_DIR": "/p", "XDG_CONFIG_HOME": "/cfg"}
    assert command().default_extensions_dir(env, "linux") == Path("/p/extensions")


def test_refuses_to_replace_something_else(tmp_path):
    foreign = tmp_path / "extensions" / "clipasso"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not a CLIPasso extension"):
        run("--profile-dir", str(tmp_path))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_zip_for_the_extension_manager(tmp_path):
    out = tmp_path / "clipasso.zip"
    run("--zip", str(out))
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        # the manager (1.2 and 1.4) names the folder after the first .inx's id and unpacks
        # every member under it as it is named; the 1.4 gallery's thumbnail is beside the .inx
        # the Sketch .inx first (its id names the folder), Update sketches' beside it
        assert [n for n in names if n.endswith(".inx")] == ["extension.inx", "extension_update.inx"]
        assert not any(n.endswith("/") for n in names)
        assert sorted(n for n in names if "/" not in n) == [
            "extension.inx",
            "extension.svg",
            "extension_update.inx",
            "extension_update.svg",
        ]
        assert archive.read("extension.svg") == (REPO / "extension.svg").read_bytes()
        assert sorted(n.split("/", 1)[1] for n in names if "/" in n) == EXPECTED
        inx = etree.fromstring(archive.read("extension.inx"))
    ident = inx.findtext("{http://www.inkscape.org/namespace/inkscape/extension}id")
    assert ident == "org.clipasso.clipasso_sketch"
    again = tmp_path / "again.zip"
    run("--zip", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_missing_inx_is_a_command_error(tmp_path, monkeypatch):
    module = command()
    package = tmp_path / "checkout" / "inkscape_clipasso"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(module, "package_dir", lambda: package)
    monkeypatch.setattr(module.sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(Exception, match=r"cannot find extension\.inx") as caught:
        run("--profile-dir", str(tmp_path / "profile"))
    assert type(caught.value).__name__ == "CommandError"
    assert not (tmp_path / "profile" / "extensions" / "clipasso").exists()
