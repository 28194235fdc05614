"""Relative image links in Inkscape's temporary copy go back as absolute file URIs (links.py):
Inkscape 1.4 breaks them otherwise, and stops batch runs on a modal dialog. The real
Inkscape's side of it is in test_end_to_end.py (a document under the temporary folder)."""

from __future__ import annotations

from pathlib import Path

from ext_helpers import by_id, data_uri, make_png, run_extension, svg_doc
from lxml import etree

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def _document(tmp_path: Path, name: str) -> Path:
    """A document as Inkscape hands it over for one under its temporary folder: the links are
    relative to the copy's folder (photos/ beside it), one of them to no file."""
    png = make_png(6, 4)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat one.png").write_bytes(png)
    (tmp_path / "photos" / "dog.png").write_bytes(png)
    absolute = (tmp_path / "photos" / "dog.png").as_posix()
    body = (
        '<image id="img1" width="6" height="4" xlink:href="photos/cat%20one.png"/>'
        f'<image id="img2" width="6" height="4" xlink:href="{data_uri(png)}"/>'
        f'<image id="img3" width="6" height="4" xlink:href="{absolute}"/>'
        '<image id="img4" width="6" height="4" xlink:href="photos/missing.png"/>'
        '<image id="img5" width="6" height="4" href="photos/dog.png"/>'
    )
    path = tmp_path / name
    path.write_text(svg_doc(body))
    return path


def _hrefs_as_written(path: Path) -> dict[str, str]:
    """The hrefs as written in the input."""
    root = etree.parse(str(path)).getroot()
    return {
        image_id: by_id(root, image_id).get(XLINK_HREF) or by_id(root, image_id).get("href")
        for image_id in ("img1", "img2", "img3", "img4", "img5")
    }


def _run(path: Path, fake) -> dict[str, str]:
    run = run_extension(path, "--id=img2", f"--url={fake.url}", "--levels=2")
    assert run.status == 0 and run.stderr == "", run.stderr
    hrefs = {}
    for image_id in ("img1", "img2", "img3", "img4", "img5"):
        image = by_id(run.svg, image_id)
        hrefs[image_id] = image.get(XLINK_HREF) or image.get("href")
    return hrefs


def test_inkscapes_copy_gets_absolute_uris_for_relative_links(tmp_path, fake_daemon):
    path = _document(tmp_path, "ink_ext_AB12CD.svg")
    before = _hrefs_as_written(path)
    hrefs = _run(path, fake_daemon)
    assert hrefs["img1"] == (tmp_path / "photos" / "cat one.png").as_uri()
    assert hrefs["img5"] == (tmp_path / "photos" / "dog.png").as_uri()  # SVG 2 href too
    # embedded, already absolute, and a link to no file: as they were
    for image_id in ("img2", "img3", "img4"):
        assert hrefs[image_id] == before[image_id], image_id


def test_a_document_given_by_path_keeps_its_links(tmp_path, fake_daemon):
    path = _document(tmp_path, "in.svg")
    assert _run(path, fake_daemon) == _hrefs_as_written(path)
