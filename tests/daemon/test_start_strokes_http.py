"""Start strokes over real HTTP on loopback (issue 18, part 3): a job that keeps the user's
strokes gets them back as the very same numbers, strokes that do not fit are a clear 400, the
cache tells jobs with and without start strokes apart, and ``POST /v1/start-strokes`` turns an
SVG drawing into start strokes with the CLI's converter.
"""

from __future__ import annotations

import json

import pytest
from daemon_helpers import assert_error, job_body, png_bytes, tiny_settings

from inkscape_clipasso import protocol

SVG_NS = "http://www.w3.org/2000/svg"
#: over the default 64 x 64 disc; awkward floats that no float32 round trip keeps
GIVEN = [
    [[10.123456789012345, 12.5], [20.333333333333332, 14.0], [30.1, 20.7], [40.9, 50.05]],
]


def _body(**settings) -> dict:
    body = job_body()
    body["settings"] = {**tiny_settings(), **settings}
    return body


def test_kept_strokes_come_back_byte_identical(shared_daemon):
    client, _ = shared_daemon
    status, job = client.post_json(
        "/v1/jobs", _body(start_strokes=GIVEN, keep_start_strokes=True, levels=[2, 3])
    )
    assert status == 202, job
    assert client.wait(job["id"])["state"] == protocol.DONE
    code, result = client.get(f"/v1/jobs/{job['id']}/result")
    assert code == 200, result
    for level in result["levels"]:
        assert len(level["paths"]) == level["strokes"]
        assert level["paths"][0]["points"] == GIVEN[0]
        assert json.dumps(level["paths"][0]["points"]) == json.dumps(GIVEN[0])
    assert result["settings"]["start_strokes"] == GIVEN
    assert result["settings"]["keep_start_strokes"] is True


@pytest.mark.parametrize(
    ("settings", "code", "words"),
    [
        # far outside the 64 x 64 photo (more than its own size around it)
        (
            dict(start_strokes=[[[10, 10], [20, 20], [30, 30], [200, 30]]]),
            "out_of_range",
            "64 x 64",
        ),
        (
            dict(start_strokes=[[[10, 10], [20, 20], [30, 30], [40, -70]]]),
            "out_of_range",
            "(40, -70)",
        ),
        # more than the smallest level holds
        (dict(start_strokes=GIVEN * 3), "out_of_range", "smallest level has 2"),
        # kept strokes leave nothing to add to a level
        (dict(start_strokes=GIVEN * 2, keep_start_strokes=True), "out_of_range", "more than 2"),
        (dict(keep_start_strokes=True), "bad_request", "needs start_strokes"),
        (dict(start_strokes=[[[1, 2], [3, 4], [5, 6]]]), "bad_request", "4 [x, y]"),
        (dict(start_strokes=[[[1, 2], [3, 4], [5, 6], [7, "8"]]]), "bad_request", "finite"),
        (
            dict(start_strokes=[[[1, 2], [3, 4], [5, 6], [7, float("nan")]]]),
            "bad_request",
            "finite",
        ),
        (dict(start_strokes="M 0,0 L 1,1"), "bad_request", "list of strokes"),
    ],
)
def test_start_strokes_that_do_not_fit_are_a_clear_400(shared_daemon, settings, code, words):
    client, _ = shared_daemon
    status, body = client.post_json("/v1/jobs", _body(**settings))
    assert_error(status, body, code)
    assert words in body["message"]


def test_a_photo_far_bigger_than_the_strokes_needs_no_margin(shared_daemon):
    """The margin is the photo's own size: a point 1.5 photo widths out is refused on a
    64 px photo and accepted on a 256 px one."""
    client, _ = shared_daemon
    far = [[[10, 10], [20, 20], [30, 30], [160, 30]]]
    status, body = client.post_json("/v1/jobs", _body(start_strokes=far))
    assert_error(status, body, "out_of_range")
    wide = _body(start_strokes=far)
    wide["image"] = job_body(png_bytes((256, 256)))["image"]
    status, body = client.post_json("/v1/jobs", wide)
    assert status == 202, body
    assert client.wait(body["id"])["state"] == protocol.DONE


def test_the_cache_tells_start_strokes_apart(shared_daemon):
    client, _ = shared_daemon
    plain = _body(seed=11)
    status, first = client.post_json("/v1/jobs", plain)
    assert status == 202, first
    client.wait(first["id"])
    status, again = client.post_json("/v1/jobs", plain)
    assert (status, again["cached"], again["id"]) == (200, True, first["id"])
    # the same photo and settings with start strokes is another job, and so is keeping them
    status, refined = client.post_json("/v1/jobs", _body(seed=11, start_strokes=GIVEN))
    assert (status, refined["cached"]) == (202, False), refined
    client.wait(refined["id"])
    status, kept = client.post_json(
        "/v1/jobs", _body(seed=11, start_strokes=GIVEN, keep_start_strokes=True)
    )
    assert (status, kept["cached"]) == (202, False), kept
    status, refined_again = client.post_json("/v1/jobs", _body(seed=11, start_strokes=GIVEN))
    assert (status, refined_again["id"]) == (200, refined["id"])


SVG = """<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
  width="320" height="320" viewBox="0 0 160 160">
  <image x="0" y="0" width="160" height="160" xlink:href="photo.png"/>
  <g transform="translate(8, 4)">
    <path d="M 0,0 L 30,0 Q 40,10 30,20"/>
  </g>
</svg>"""


def test_start_strokes_route_turns_an_svg_into_strokes(shared_daemon):
    client, _ = shared_daemon
    status, body = client.post_json("/v1/start-strokes", {"svg": SVG, "width": 64, "height": 64})
    assert status == 200, body
    strokes = protocol.validate_start_strokes_response(body)
    # the image fills the 160-unit viewBox, so a unit is 64 / 160 photo pixels
    unit = 64 / 160
    assert len(strokes) == 2
    assert strokes[0][0] == pytest.approx((8 * unit, 4 * unit), abs=1e-9)
    assert strokes[0][3] == pytest.approx((38 * unit, 4 * unit), abs=1e-9)
    assert strokes[1][3] == pytest.approx((38 * unit, 24 * unit), abs=1e-9)
    # and they go into a job as they are
    status, job = client.post_json("/v1/jobs", _body(start_strokes=body["strokes"]))
    assert status == 202, job


@pytest.mark.parametrize(
    ("request_body", "code", "words"),
    [
        ({"svg": "<svg", "width": 64, "height": 64}, "bad_request", "not a readable SVG"),
        (
            {
                "svg": '<svg xmlns="http://www.w3.org/2000/svg"><text>hi</text></svg>',
                "width": 64,
                "height": 64,
            },
            "bad_request",
            "no paths",
        ),
        (
            {
                "svg": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><path d="M 0,0'
                + " l 0.01,0.01" * 300
                + '"/></svg>',
                "width": 64,
                "height": 64,
            },
            "out_of_range",
            "more than 256 strokes",
        ),
        (
            {
                "svg": f'<svg xmlns="{SVG_NS}" viewBox="0 0 10 10"><path d="M 0,0 L 50,0"/></svg>',
                "width": 64,
                "height": 64,
            },
            "out_of_range",
            "too far outside",
        ),
        ({"svg": SVG, "width": 0, "height": 64}, "out_of_range", "width"),
        ({"svg": SVG, "width": 64}, "bad_request", "height"),
        ({"svg": SVG, "width": 64, "height": 64, "levels": 3}, "unknown_field", "levels"),
        ({"svg": 3, "width": 64, "height": 64}, "bad_request", "SVG document's text"),
    ],
)
def test_start_strokes_route_refuses_clearly(shared_daemon, request_body, code, words):
    client, _ = shared_daemon
    status, body = client.post_json("/v1/start-strokes", request_body)
    assert_error(status, body, code)
    assert words in body["message"] and "\n" not in body["message"]


def test_start_strokes_route_wants_json_and_the_token(start_daemon):
    client, _ = start_daemon(token="secret")
    status, body = client.request("POST", "/v1/start-strokes", SVG.encode(), "image/svg+xml")
    assert_error(status, body, "unsupported_media_type")
    client.token = None
    status, body = client.post_json("/v1/start-strokes", {"svg": SVG, "width": 64, "height": 64})
    assert_error(status, body, "unauthorized")
