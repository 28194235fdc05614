"""Install the Inkscape extension into your Inkscape profile, or build its zip.

The extension is extension.inx plus the inkscape_clipasso package (inkex and the standard
library only, so it runs in Inkscape's own Python), and extension.svg, the thumbnail Inkscape
1.4's Extensions Gallery finds beside the .inx by its name. It goes into a folder "clipasso"
under the profile's extensions folder: $INKSCAPE_PROFILE_DIR/extensions when that is set, else
$XDG_CONFIG_HOME/inkscape/extensions (normally ~/.config/inkscape/extensions). --link makes
symlinks to this checkout instead of copies, for development. --zip OUT.zip builds a zip with
the .inx at its root, for Extensions > Manage Extensions > Install Package in Inkscape.
Restart Inkscape afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import inkscape_clipasso
from inkscape_clipasso import daemon_command

#: The folder the extension is installed into, under the profile's extensions folder.
FOLDER = "clipasso"
INX_NAME = "extension.inx"
#: Extensions > CLIPasso > Update sketches, a second effect of the same package (beside the
#: first .inx: the Extension Manager names the folder after the first .inx in the zip).
UPDATE_INX_NAME = "extension_update.inx"
#: The gallery thumbnails (Inkscape 1.4 looks for the .inx's name with .svg; 1.2 ignores them).
ICON_NAME = "extension.svg"
UPDATE_ICON_NAME = "extension_update.svg"
PACKAGE = "inkscape_clipasso"
#: Where a non-editable install keeps the .inx (pyproject's data-files).
SHARED_INX = Path("share") / "clipasso-inkscape" / INX_NAME
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile-dir, --link, --zip."""
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the Inkscape profile to install into (default: $INKSCAPE_PROFILE_DIR, "
        "else ~/.config/inkscape)",
    )
    parser.add_argument(
        "--link",
        action="store_true",
        help="symlink to this checkout instead of copying (edits take effect at once)",
    )
    parser.add_argument(
        "--zip",
        type=Path,
        default=None,
        metavar="OUT.zip",
        help="build a zip for Inkscape's Extension Manager instead of installing",
    )


def package_dir() -> Path:
    """The inkscape_clipasso package folder this command belongs with."""
    return Path(inkscape_clipasso.__file__).resolve().parent


def find_inx() -> Path:
    """The one canonical extension.inx: beside the package in a checkout (or an editable
    install), else where a regular install put it under sys.prefix."""
    for candidate in (package_dir().parent / INX_NAME, Path(sys.prefix) / SHARED_INX):
        if candidate.is_file():
            return candidate
    from clipasso_server.cli import CommandError

    raise CommandError(
        f"cannot find {INX_NAME} (looked beside {package_dir()} and under {sys.prefix}); "
        "install from a checkout of the project"
    )


def find_icon(inx: Path, name: str = ICON_NAME) -> Path | None:
    """The gallery thumbnail ``name`` beside the .inx, if it is there (it is optional)."""
    icon = inx.with_name(name)
    return icon if icon.is_file() else None


def package_files() -> list[Path]:
    """The extension's Python files: the package's modules, no caches, no tests."""
    return sorted(path for path in package_dir().glob("*.py") if path.is_file())


def default_extensions_dir(
    env: Mapping[str, str] | None = None, platform: str | None = None
) -> Path:
    """Inkscape's user extensions folder, as Inkscape itself picks it."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if env.get("INKSCAPE_PROFILE_DIR"):
        return Path(env["INKSCAPE_PROFILE_DIR"]) / "extensions"
    if platform == "win32" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "inkscape" / "extensions"
    if platform == "darwin":
        return (
            Path.home()
            / "Library/Application Support/org.inkscape.Inkscape/config/inkscape/extensions"
        )
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "inkscape" / "extensions"


def members(inx: Path) -> list[tuple[str, Path]]:
    """(path inside the extension's folder, source file): the .inx, its thumbnail when there
    is one, the Update sketches .inx and its thumbnail, the package's modules."""
    files = [(INX_NAME, inx)]
    icon = find_icon(inx)
    if icon is not None:
        files.append((ICON_NAME, icon))
    update = inx.with_name(UPDATE_INX_NAME)
    if update.is_file():
        files.append((UPDATE_INX_NAME, update))
        update_icon = find_icon(inx, UPDATE_ICON_NAME)
        if update_icon is not None:
            files.append((UPDATE_ICON_NAME, update_icon))
    return files + [(f"{PACKAGE}/{path.name}", path) for path in package_files()]


def _remove_previous(target: Path) -> None:
    """Remove an earlier install at ``target``; refuse to touch anything that is not one."""
    if target.is_symlink() or target.is_file():
        target.unlink()
        return
    if not target.exists():
        return
    if not (target / INX_NAME).exists() and not (target / PACKAGE).exists():
        from clipasso_server.cli import CommandError

        raise CommandError(f"{target} exists and is not a CLIPasso extension; move it away first")
    shutil.rmtree(target)


def install(extensions_dir: Path, link: bool = False) -> Path:
    """Copy (or symlink) the extension into ``extensions_dir/clipasso``; returns that folder."""
    inx = find_inx()
    target = extensions_dir / FOLDER
    _remove_previous(target)
    (target / PACKAGE).mkdir(parents=True)
    for name, path in members(inx):
        if link:
            (target / name).symlink_to(path)
        else:
            shutil.copyfile(path, target / name)
    # so the extension's "could not reach the daemon" names the command that works here
    daemon_command.write_record(target, daemon_command.find_program())
    return target


def build_zip(out: Path) -> Path:
    """A zip with the .inx and its thumbnail at its root and the package beside them,
    byte-identical run to run.

    Inkscape's Extension Manager (1.2 and 1.4 alike) takes the id of the first .inx in the zip
    and unpacks every member into <extensions>/<inx id>/ under its own path; there the 1.4
    gallery finds the thumbnail beside the .inx. Every member is a file (no directory entries).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in members(find_inx()):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return out


def run(args: argparse.Namespace) -> int:
    """Install, or build the zip, and say where."""
    if args.zip is not None:
        print(f"clipasso install-extension: wrote {build_zip(args.zip)}")
        return 0
    extensions = (
        Path(args.profile_dir) / "extensions"
        if args.profile_dir is not None
        else default_extensions_dir()
    )
    target = install(extensions, link=args.link)
    how = "linked" if args.link else "installed"
    print(f"clipasso install-extension: {how} the extension in {target}; restart Inkscape")
    return 0
