"""Which elements are sketched, and that the daemon gets each bitmap's original bytes."""

from __future__ import annotations

import base64
import json

import pytest
from ext_helpers import by_id, data_uri, layers, make_png, run_extension, svg_doc

SODIPODI = "http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"


def write(tmp_path, body: str, name: str = "in.svg"):
    path = tmp_path / name
    path.write_text(svg_doc(body))
    return path


def linked(href: str, extra: str = "") -> str:
    return f'<image id="img1" x="0" y="0" width="10" height="10" xlink:href="{href}" {extra}/>'


def test_embedded_image_bytes_are_sent_unchanged(tmp_path, fake_daemon):
    png = make_png(9, 7)
    path = write(tmp_path, f'<image id="img1" width="9" height="7" xlink:href="{data_uri(png)}"/>')
    run = run_extension(path, "--id=img1", f"--url={fake_daemon.url}", "--levels=1")
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [png]
    assert fake_daemon.requests[0].body["name"] == "img1"


def test_embedded_base64_with_line_breaks(tmp_path, fake_daemon):
    png = make_png(5, 5)
    text = base64.encodebytes(png).decode("ascii")  # wrapped at 76 columns
    body = f'<image id="img1" width="5" height="5" xlink:href="data:image/png;base64,{text}"/>'
    run = run_extension(
        write(tmp_path, body), "--id=img1", f"--url={fake_daemon.url}", "--levels=1"
    )
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [png]


def test_linked_image_next_to_the_input_file(tmp_path, fake_daemon):
    png = make_png(6, 4)
    (tmp_path / "photo.png").write_bytes(png)
    path = write(tmp_path, linked("photo.png"))
    # the saved document lives elsewhere: the input file's folder must win (Inkscape's temp copy)
    run = run_extension(
        path, "--id=img1", f"--url={fake_daemon.url}", document_path="/nonexistent/doc.svg"
    )
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [png]


def test_linked_image_found_through_absref(tmp_path, fake_daemon):
    png = make_png(6, 4)
    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    (elsewhere / "photo.png").write_bytes(png)
    body = linked("photo.png", f'sodipodi:absref="{elsewhere / "photo.png"}"')
    run = run_extension(write(tmp_path, body), "--id=img1", f"--url={fake_daemon.url}")
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [png]


def test_linked_image_found_next_to_the_saved_document(tmp_path, fake_daemon):
    png = make_png(6, 4)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "photo.png").write_bytes(png)
    temp = tmp_path / "tmp"
    temp.mkdir()
    path = write(temp, linked("photo.png"))
    run = run_extension(
        path, "--id=img1", f"--url={fake_daemon.url}", document_path=str(saved / "doc.svg")
    )
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [png]


def test_linked_image_as_file_url(tmp_path, fake_daemon):
    png = make_png(3, 3)
    (tmp_path / "a photo.png").write_bytes(png)
    href = (tmp_path / "a photo.png").as_uri()
    run = run_extension(write(tmp_path, linked(href)), "--id=img1", f"--url={fake_daemon.url}")
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [png]


def test_missing_linked_file_is_a_clear_error(tmp_path, fake_daemon):
    run = run_extension(
        write(tmp_path, linked("gone.png")), "--id=img1", f"--url={fake_daemon.url}"
    )
    assert run.status != 0
    assert run.output == b""
    assert "gone.png" in run.stderr and "not found" in run.stderr
    assert fake_daemon.requests == []


def test_remote_link_is_refused(tmp_path, fake_daemon):
    path = write(tmp_path, linked("https://example.org/photo.png"))
    run = run_extension(path, "--id=img1", f"--url={fake_daemon.url}")
    assert run.status != 0 and run.output == b""
    assert "not a local file" in run.stderr and "embed" in run.stderr.lower()


def test_nothing_selected(tmp_path, fake_daemon):
    path = write(
        tmp_path, f'<image id="img1" width="5" height="5" xlink:href="{data_uri(make_png(5, 5))}"/>'
    )
    run = run_extension(path, f"--url={fake_daemon.url}")
    assert run.status != 0 and run.output == b""
    assert "Select one or more bitmap images" in run.stderr
    assert fake_daemon.requests == []


def test_only_non_images_selected(tmp_path, fake_daemon):
    path = write(tmp_path, '<rect id="r1" width="5" height="5"/>')
    run = run_extension(path, "--id=r1", f"--url={fake_daemon.url}")
    assert run.status != 0 and run.output == b""
    assert "None of the selected objects is an image" in run.stderr


def test_other_objects_are_ignored_and_listed_on_the_layer(tmp_path, fake_daemon):
    body = (
        '<rect id="r1" width="5" height="5"/>'
        f'<image id="img1" width="5" height="5" xlink:href="{data_uri(make_png(5, 5))}"/>'
    )
    run = run_extension(
        write(tmp_path, body), "--id=r1", "--id=img1", f"--url={fake_daemon.url}", "--levels=2"
    )
    assert run.status == 0 and run.stderr == ""  # stderr would open a dialog in Inkscape
    assert len(fake_daemon.submitted_images()) == 1
    parent = by_id(run.svg, "clipasso-img1")
    assert parent.get("{https://clipasso-inkscape.invalid/ns/1}ignored") == "r1"


def test_several_images_one_layer_each(tmp_path, fake_daemon):
    first, second = make_png(4, 4, (0, 0, 0)), make_png(6, 3, (255, 255, 255))
    body = (
        f'<image id="a" inkscape:label="Cat" width="4" height="4" xlink:href="{data_uri(first)}"/>'
        f'<image id="b" x="50" width="6" height="3" xlink:href="{data_uri(second)}"/>'
    )
    run = run_extension(
        write(tmp_path, body), "--id=a", "--id=b", f"--url={fake_daemon.url}", "--levels=2,5"
    )
    assert run.status == 0, run.stderr
    assert fake_daemon.submitted_images() == [first, second]
    root = run.svg
    assert by_id(root, "clipasso-a").get("{http://www.inkscape.org/namespaces/inkscape}label") == (
        "CLIPasso: Cat"
    )
    assert by_id(root, "clipasso-b").get("{http://www.inkscape.org/namespaces/inkscape}label") == (
        "CLIPasso: b"
    )
    assert len(by_id(root, "clipasso-b-level-5")) == 5


def test_layers_ids_visibility_and_records(tmp_path, fake_daemon):
    png = make_png(8, 8)
    path = write(tmp_path, f'<image id="img1" width="8" height="8" xlink:href="{data_uri(png)}"/>')
    run = run_extension(
        path, "--id=img1", f"--url={fake_daemon.url}", "--levels=8,4,16", "--seed=42"
    )
    assert run.status == 0 and run.stderr == ""
    root = run.svg
    parent = by_id(root, "clipasso-img1")
    assert parent.getparent() is root
    sub = [layer for layer in layers(root) if layer.getparent() is parent]
    labels = [layer.get("{http://www.inkscape.org/namespaces/inkscape}label") for layer in sub]
    assert labels == ["4 strokes", "8 strokes", "16 strokes"]
    assert [len(layer) for layer in sub] == [4, 8, 16]
    hidden = ["display:none" in (layer.get("style") or "") for layer in sub]
    assert hidden == [True, True, False]  # "most" by default
    ns = "{https://clipasso-inkscape.invalid/ns/1}"
    assert json.loads(parent.get(ns + "settings"))["seed"] == 42
    assert parent.get(ns + "seed") == "42"
    assert parent.get(ns + "version") == "9.9.9-fake"
    assert json.loads(parent.get(ns + "models")) == {"loss": "RN101", "saliency": "ViT-B-32"}
    assert sub[1].get(ns + "seed") == "1042"


def test_second_run_gets_new_unique_ids(tmp_path, fake_daemon):
    png = make_png(8, 8)
    path = write(tmp_path, f'<image id="img1" width="8" height="8" xlink:href="{data_uri(png)}"/>')
    first = run_extension(path, "--id=img1", f"--url={fake_daemon.url}", "--levels=2")
    again = tmp_path / "again.svg"
    again.write_bytes(first.output)
    second = run_extension(again, "--id=img1", f"--url={fake_daemon.url}", "--levels=2")
    assert second.status == 0, second.stderr
    root = second.svg
    ids = root.xpath("//@id")
    assert len(ids) == len(set(ids))
    assert by_id(root, "clipasso-img1-2-level-2-stroke-2") is not None
    assert by_id(root, "clipasso-img1-level-2-stroke-2") is not None


@pytest.mark.parametrize(
    ("choice", "shown"), [("9", [8]), ("fewest", [4]), ("most", [16]), ("all", [4, 8, 16])]
)
def test_visible_level(tmp_path, fake_daemon, choice, shown):
    png = make_png(8, 8)
    path = write(tmp_path, f'<image id="img1" width="8" height="8" xlink:href="{data_uri(png)}"/>')
    run = run_extension(
        path,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--levels=4,8,16",
        f"--visible_level={choice}",
    )
    assert run.status == 0, run.stderr
    root = run.svg
    visible = [
        count
        for count in (4, 8, 16)
        if "display:none" not in (by_id(root, f"clipasso-img1-level-{count}").get("style") or "")
    ]
    assert visible == shown


@pytest.mark.parametrize("photo", ["keep", "lock", "hide"])
def test_photo_keep_lock_hide(tmp_path, fake_daemon, photo):
    png = make_png(8, 8)
    path = write(tmp_path, f'<image id="img1" width="8" height="8" xlink:href="{data_uri(png)}"/>')
    run = run_extension(
        path, "--id=img1", f"--url={fake_daemon.url}", "--levels=2", f"--photo={photo}"
    )
    assert run.status == 0, run.stderr
    image = by_id(run.svg, "img1")
    assert (image.get(f"{{{SODIPODI}}}insensitive") == "true") == (photo == "lock")
    assert ("display:none" in (image.get("style") or "").replace(" ", "")) == (photo == "hide")
