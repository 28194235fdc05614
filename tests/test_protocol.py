"""The shared request/response schema: what the daemon accepts and what the extension trusts."""

from __future__ import annotations

import base64
import copy

import pytest

from inkscape_clipasso import protocol
from inkscape_clipasso.protocol import ProtocolError, SketchSettings


def test_defaults_are_the_reference():
    settings = protocol.parse_settings({})
    assert settings == SketchSettings()
    assert settings.levels == (4, 8, 16, 32)
    assert (settings.iterations, settings.seeds, settings.width) == (2000, 3, 3.0)
    assert (settings.loss_model, settings.saliency_model) == ("RN101", "ViT-B-32")


_MAX_SEED = 2**31 - 1
_WEEK = 7 * 86400.0


@pytest.mark.parametrize(
    ("field", "lowest", "highest", "below", "above"),
    [
        ("levels", [1], list(range(249, 257)), [0], [257]),
        ("iterations", 1, 20000, 0, 20001),
        ("seeds", 1, 16, 0, 17),
        ("width", 0.1, 50.0, 0.09, 50.01),
        ("seed", 0, _MAX_SEED, -1, _MAX_SEED + 1),
        ("time_budget_s", 1.0, _WEEK, 0.99, _WEEK + 1),
    ],
)
def test_every_bound_is_enforced_both_ways(field, lowest, highest, below, above):
    for accepted in (lowest, highest):
        value = getattr(protocol.parse_settings({field: accepted}), field)
        assert value == (tuple(accepted) if field == "levels" else accepted)
    for refused in (below, above):
        with pytest.raises(ProtocolError) as info:
            protocol.parse_settings({field: refused})
        assert info.value.code == "out_of_range"
    if field == "levels":  # at most eight levels
        with pytest.raises(ProtocolError):
            protocol.parse_settings({"levels": list(range(248, 257))})


def test_settings_round_trip_through_json():
    settings = protocol.parse_settings(
        {"levels": "16, 4 ,8,8", "iterations": 50, "seeds": 2, "width": 2, "color": "#FF0000"}
    )
    assert settings.levels == (4, 8, 16)
    assert settings.color == "#ff0000"
    assert isinstance(settings.width, float)
    assert protocol.parse_settings(settings.to_json()) == settings


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        ({"levels": [0]}, "out_of_range"),
        ({"levels": [257]}, "out_of_range"),
        ({"levels": "4,x"}, "bad_request"),
        ({"levels": []}, "bad_request"),
        ({"levels": [4.5]}, "bad_request"),
        ({"levels": list(range(1, 20))}, "out_of_range"),
        ({"iterations": 0}, "out_of_range"),
        ({"iterations": "10"}, "bad_request"),
        ({"iterations": True}, "bad_request"),
        ({"seeds": 0}, "out_of_range"),
        ({"width": -1}, "out_of_range"),
        ({"width": "3"}, "bad_request"),
        ({"color": "black"}, "bad_request"),
        ({"loss_model": "../../etc/passwd x"}, "bad_request"),
        ({"renderer": "cairo"}, "out_of_range"),
        ({"schedule": "quick"}, "out_of_range"),
        ({"precision": "fp16"}, "out_of_range"),
        ({"precision": ["bf16"]}, "out_of_range"),
        ({"remove_background": "yes"}, "bad_request"),
        ({"seed": -1}, "out_of_range"),
        ({"colour": "#000000"}, "unknown_field"),
        ([1, 2], "bad_request"),
    ],
)
def test_bad_settings_are_refused_with_a_code(settings, code):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_settings(settings)
    assert info.value.code == code
    assert info.value.status == protocol.ERROR_STATUS[code]
    assert info.value.to_json() == {"error": code, "message": info.value.message}


@pytest.mark.parametrize("precision", protocol.PRECISIONS)
def test_every_precision_is_accepted_and_auto_is_the_default(precision):
    assert SketchSettings().precision == "auto"
    assert protocol.parse_settings({"precision": precision}).precision == precision


def test_a_refused_choice_names_the_choices():
    with pytest.raises(
        ProtocolError, match="precision must be one of auto, fp32, bf16, got 'fp16'"
    ):
        protocol.parse_settings({"precision": "fp16"})


def test_job_request_round_trip():
    body = protocol.build_job_request(b"\x89PNG...", SketchSettings(levels=(2, 3)), "photo")
    request = protocol.parse_job_request(body)
    assert request.image == b"\x89PNG..."
    assert request.settings.levels == (2, 3)
    assert request.name == "photo"


def test_job_request_accepts_a_data_uri():
    uri = "data:image/png;base64," + base64.b64encode(b"abc").decode()
    assert protocol.parse_job_request({"image": uri}).image == b"abc"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "bad_request"),
        ({"image": "not base64!"}, "bad_request"),
        ({"image": ""}, "bad_request"),
        ({"image": "YWJj", "extra": 1}, "unknown_field"),
        ({"image": "YWJj", "settings": {"levels": [999]}}, "out_of_range"),
        ("a string", "bad_request"),
    ],
)
def test_bad_job_requests(body, code):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_job_request(body)
    assert info.value.code == code


def _result() -> dict:
    return {
        "id": "a" * 32,
        "image": {"width": 64, "height": 48},
        "levels": [
            {
                "strokes": 1,
                "seed": 0,
                "loss": 0.5,
                "paths": [
                    {"points": [[0, 0], [1, 1], [2, 2], [3, 3]], "width": 1.5, "color": "#000000"}
                ],
            }
        ],
        "svg": "<svg/>",
        "settings": SketchSettings(levels=(1,)).to_json(),
        "models": {"loss": "RN101"},
        "version": "0.1.0",
    }


def test_valid_result_passes():
    assert protocol.validate_result(_result())["id"] == "a" * 32


@pytest.mark.parametrize(
    "breaks",
    [
        lambda r: r["levels"][0]["paths"].append(copy.deepcopy(r["levels"][0]["paths"][0])),
        lambda r: r["levels"][0]["paths"][0]["points"].pop(),
        lambda r: r["levels"][0]["paths"][0].__setitem__("color", "red"),
        lambda r: r["image"].__setitem__("width", 0),
        lambda r: r.pop("svg"),
        lambda r: r["levels"].clear(),
        lambda r: r["levels"][0]["paths"][0]["points"][0].__setitem__(0, True),
    ],
)
def test_malformed_results_are_caught(breaks):
    result = _result()
    breaks(result)
    with pytest.raises(ProtocolError):
        protocol.validate_result(result)


def test_status_validation():
    status = {
        "id": "b" * 32,
        "state": "running",
        "queue_position": 0,
        "step": 3,
        "total": 10,
        "best_loss": {"4": 0.25},
        "elapsed_s": 1.5,
        "eta_s": None,
        "error": None,
    }
    assert protocol.validate_status(status)["step"] == 3
    with pytest.raises(ProtocolError):
        protocol.validate_status({**status, "state": "sleeping"})
    with pytest.raises(ProtocolError):
        protocol.validate_status({**status, "best_loss": {"four": 1.0}})
    with pytest.raises(ProtocolError):
        protocol.validate_status({**status, "error": {"error": "x"}})
    # what the live page says of a job its time budget stopped
    done = {**status, "state": "done", "time_budget_s": 60.0, "stop_reason": "budget"}
    assert protocol.validate_status(done)["stop_reason"] == "budget"
    with pytest.raises(ProtocolError, match="stop_reason"):
        protocol.validate_status({**done, "stop_reason": "tired"})
    with pytest.raises(ProtocolError):
        protocol.validate_status({**done, "time_budget_s": "a minute"})


def test_error_bodies_parse():
    error = protocol.parse_error({"error": "queue_full", "message": "try later"})
    assert error is not None and error.status == 429 and error.message == "try later"
    assert protocol.parse_error({"error": "weird", "message": "m"}).code == "internal"
    assert protocol.parse_error("nope") is None


def test_job_ids():
    assert protocol.is_job_id("0123456789abcdef" * 2)
    assert not protocol.is_job_id("../etc/passwd")
    assert not protocol.is_job_id("A" * 32)


def test_start_strokes_request_and_response():
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><path d="M 0,0 L 1,1"/></svg>'
    parsed = protocol.parse_start_strokes_request({"svg": svg, "width": 640, "height": 480})
    assert (parsed.svg, parsed.width, parsed.height) == (svg, 640, 480)
    strokes = (((0.5, 1.0), (2.0, 3.0), (4.0, 5.0), (6.25, 7.0)),)
    body = protocol.start_strokes_response(strokes)
    assert body == {"strokes": [[[0.5, 1.0], [2.0, 3.0], [4.0, 5.0], [6.25, 7.0]]]}
    assert protocol.validate_start_strokes_response(body) == strokes
    # what the answer holds goes into a job's settings as it is
    settings = protocol.parse_settings({"levels": [2], "start_strokes": body["strokes"]})
    assert settings.start_strokes == strokes


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "bad_request"),
        ({"width": 10, "height": 10}, "bad_request"),
        ({"svg": "  ", "width": 10, "height": 10}, "bad_request"),
        ({"svg": "<svg/>", "width": 0, "height": 10}, "out_of_range"),
        ({"svg": "<svg/>", "width": 10, "height": 10.5}, "bad_request"),
        ({"svg": "<svg/>", "width": 10, "height": True}, "bad_request"),
        ({"svg": "<svg/>", "width": 10, "height": 10, "image": "x"}, "unknown_field"),
        ({"svg": "x" * (protocol.MAX_START_SVG_CHARS + 1), "width": 1, "height": 1}, "too_large"),
    ],
)
def test_bad_start_strokes_requests(body, code):
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_start_strokes_request(body)
    assert caught.value.code == code
