"""Bad input gets a JSON 4xx with the right code, and the daemon stays up afterwards."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from daemon_helpers import assert_error, job_body, png_bytes, tiny_settings, unknown_job_id

from inkscape_clipasso import protocol


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 30000) -> bytes:
    """A 100-byte PNG whose header claims side x side pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def corrupt_png() -> bytes:
    """A PNG with its pixel data scrambled (the chunk's CRC no longer matches)."""
    data = bytearray(png_bytes())
    start = data.index(b"IDAT") + 8
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    return bytes(data)


def truncated_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()[: len(out.getvalue()) // 2]


def _with_image(image: bytes) -> dict:
    return {**job_body(), "image": base64.b64encode(image).decode()}


def _with_settings(**changes) -> dict:
    body = job_body()
    body["settings"] = {**tiny_settings(), **changes}
    return body


JSON_CASES = {
    "not an object": ([1, 2, 3], "bad_request"),
    "no image": ({"settings": tiny_settings()}, "bad_request"),
    "unknown field": ({**job_body(), "colour": "red"}, "unknown_field"),
    "unknown setting": (_with_settings(mask=True), "unknown_field"),
    "iterations of the wrong type": (_with_settings(iterations="ten"), "bad_request"),
    "width of the wrong type": (_with_settings(width=[3]), "bad_request"),
    "name of the wrong type": ({**job_body(), "name": 7}, "bad_request"),
    "zero iterations": (_with_settings(iterations=0), "out_of_range"),
    "too many strokes": (_with_settings(levels=[2, 300]), "out_of_range"),
    "negative seed": (_with_settings(seed=-1), "out_of_range"),
    "unknown renderer": (_with_settings(renderer="opengl"), "out_of_range"),
    "unknown model": (_with_settings(loss_model="RN9000"), "out_of_range"),
    "a ViT as the loss model": (_with_settings(loss_model="test-tiny-vit"), "out_of_range"),
    "image not base64": ({**job_body(), "image": "***"}, "bad_request"),
    "image not an image": (_with_image(b"hello, this is text"), "bad_image"),
    "truncated PNG": (_with_image(png_bytes()[:80]), "bad_image"),
    "truncated JPEG": (_with_image(truncated_jpeg()), "bad_image"),
    "corrupt PNG": (_with_image(corrupt_png()), "bad_image"),
    "decompression bomb": (_with_image(bomb_png()), "image_too_large"),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_bad_json_requests_are_refused(shared_daemon, case):
    client, _ = shared_daemon
    data, code = JSON_CASES[case]
    assert_error(*client.post_json("/v1/jobs", data), code)


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b'{"image": "abc", ', "application/json", "bad_json"),
        (b"", "application/json", "bad_json"),
        (b"\xff\xfe not utf-8", "application/json", "bad_json"),
        (b"[" * 100000 + b"]" * 100000, "application/json", "bad_json"),
        (b"image=abc", "text/plain", "unsupported_media_type"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", "bad_request"),
    ],
    ids=["truncated", "empty", "not utf-8", "nested too deep", "text/plain", "multipart"],
)
def test_malformed_bodies_are_refused(shared_daemon, body, content_type, code):
    client, _ = shared_daemon
    assert_error(*client.request("POST", "/v1/jobs", body, content_type), code)


def _multipart(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    body = b""
    for name, data in parts:
        body += (
            (
                f'--b0undary\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"'
                "\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + b"--b0undary--\r\n", "multipart/form-data; boundary=b0undary"


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([("settings", json.dumps(tiny_settings()).encode())], "bad_request"),
        ([("image", png_bytes()), ("settings", b"{not json")], "bad_json"),
        ([("image", png_bytes()), ("mask", b"1")], "unknown_field"),
        ([("image", b"GIF89a-but-not-really")], "bad_image"),
    ],
    ids=["no image", "settings not JSON", "unknown part", "not an image"],
)
def test_bad_multipart_requests_are_refused(shared_daemon, parts, code):
    client, _ = shared_daemon
    assert_error(*client.request("POST", "/v1/jobs", *_multipart(parts)), code)


def test_bodies_over_the_size_cap_are_refused(shared_daemon):
    client, _ = shared_daemon  # its cap is 2 MB
    big = png_bytes() + b"\0" * (3 * 1024 * 1024)
    assert_error(*client.post_json("/v1/jobs", _with_image(big)), "too_large")
    assert_error(*client.request("POST", "/v1/jobs", *_multipart([("image", big)])), "too_large")


def test_unknown_ids_and_endpoints(shared_daemon):
    client, _ = shared_daemon
    for job_id in (unknown_job_id(), "not-a-job-id", "../../etc/passwd"):
        assert_error(*client.get(f"/v1/jobs/{job_id}"), "not_found")
        assert_error(*client.get(f"/v1/jobs/{job_id}/result"), "not_found")
        assert_error(*client.delete(f"/v1/jobs/{job_id}"), "not_found")
    assert_error(*client.get("/v1/nothing"), "not_found")
    assert_error(
        *client.request("PUT", "/v1/jobs", b"{}", "application/json"), "method_not_allowed"
    )


def test_the_daemon_stays_up_and_still_works(shared_daemon):
    """After every bad request above (same module daemon), a good job still runs."""
    client, _ = shared_daemon
    status, health = client.get("/v1/health")
    assert status == 200 and protocol.validate_health(health)
    job = client.submit(iterations=2, levels=[2], seed=77)
    assert client.wait(job["id"])["state"] == protocol.DONE
