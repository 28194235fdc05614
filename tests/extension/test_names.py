"""Layers are named after what the user knows the photo by, and the photo keeps its geometry."""

from __future__ import annotations

import pytest
from ext_helpers import NSS, by_id, data_uri, make_png, run_extension, svg_doc

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"


def run_on(tmp_path, fake, body: str, *args: str, name: str = "in.svg"):
    path = tmp_path / name
    path.write_text(svg_doc(body))
    run = run_extension(path, "--id=img1", f"--url={fake.url}", "--levels=2", *args)
    assert run.status == 0 and run.stderr == "", run.stderr
    return run


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ('inkscape:label="Grandma" xlink:href="photos/IMG_0042.png"', "CLIPasso: Grandma"),
        ('xlink:href="photos/IMG_0042.png"', "CLIPasso: IMG_0042.png"),
        ('xlink:href="{uri}"', "CLIPasso: img1"),  # embedded, no label: the id
    ],
)
def test_layer_named_after_label_then_file_then_id(tmp_path, fake_daemon, attributes, expected):
    png = make_png(6, 4)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "IMG_0042.png").write_bytes(png)
    attributes = attributes.replace("{uri}", data_uri(png))
    run = run_on(tmp_path, fake_daemon, f'<image id="img1" width="6" height="4" {attributes}/>')
    assert by_id(run.svg, "clipasso-img1").get(LABEL) == expected
    assert fake_daemon.requests[0].body["name"] == expected.split(": ", 1)[1]


def test_second_run_on_the_same_photo_is_numbered(tmp_path, fake_daemon):
    png = make_png(6, 4)
    (tmp_path / "cat.png").write_bytes(png)
    body = '<image id="img1" width="6" height="4" xlink:href="cat.png"/>'
    first = run_on(tmp_path, fake_daemon, body)
    labels = []
    document = first.output
    for number in (2, 3):
        (tmp_path / f"run{number}.svg").write_bytes(document)
        again = run_extension(
            tmp_path / f"run{number}.svg", "--id=img1", f"--url={fake_daemon.url}", "--levels=2"
        )
        assert again.status == 0, again.stderr
        document = again.output
        found = again.svg.xpath("//*[starts-with(@inkscape:label, 'CLIPasso')]", namespaces=NSS)
        labels = [layer.get(LABEL) for layer in found]
    assert labels == ["CLIPasso: cat.png", "CLIPasso: cat.png (2)", "CLIPasso: cat.png (3)"]


@pytest.mark.parametrize("photo", ["keep", "lock", "hide"])
def test_the_photo_and_its_groups_keep_their_exact_geometry(tmp_path, fake_daemon, photo):
    png = data_uri(make_png(6, 4))
    group = "translate(3.14159265,2.71828183) rotate(33.3333333)"
    own = "rotate(12.3456789,4,4) skewX(7.77777)"
    clip = "translate(0.123456789)"
    body = (
        f'<defs><clipPath id="c1"><rect id="cr" width="3" height="3" transform="{clip}"/>'
        f'</clipPath></defs><g id="g1" transform="{group}">'
        f'<image id="img1" width="6" height="4" transform="{own}" clip-path="url(#c1)" '
        f'xlink:href="{png}"/></g>'
    )
    run = run_on(tmp_path, fake_daemon, body, f"--photo={photo}")
    root = run.svg
    assert by_id(root, "g1").get("transform") == group
    assert by_id(root, "img1").get("transform") == own
    assert by_id(root, "cr").get("transform") == clip
    image = by_id(root, "img1")
    for name in ("width", "height", "x", "y"):
        assert image.get(name) == {"width": "6", "height": "4"}.get(name)
