"""Small files that decode huge: a working copy, the photo's own size kept, a pixel budget.

``bench/probe_daemon.py`` measures memory and status-poll latency under a flood of such
files; here the behaviours are pinned with real Pillow decodes and a real daemon.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from daemon_helpers import assert_error, job_body, png_bytes
from PIL import Image, ImageDraw

from clipasso_server.engine import image_decode
from clipasso_server.engine.image_input import image_to_canvas
from inkscape_clipasso import protocol


def rotated_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG stored ``size`` wide whose EXIF says to turn it a quarter (orientation 6)."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 4, size[1] // 2), fill="black")
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=80)
    return out.getvalue()


def test_a_big_png_is_decoded_to_a_working_copy_that_knows_its_size():
    data = png_bytes((6000, 4000), shade=30)
    assert len(data) < 500_000
    image = image_decode.decode_image(data)
    assert image_decode.WORKING_SIZE <= max(image.size) < 2 * image_decode.WORKING_SIZE
    assert image_decode.original_size(image) == (6000, 4000)
    _, placement = image_to_canvas(image)
    assert (placement.image_width, placement.image_height) == (6000, 4000)
    assert abs(placement.scale - 224 / 6000) < 1e-9
    full = image_decode.decode_image(data, working_size=None)
    assert full.size == (6000, 4000) == image_decode.original_size(full)


def test_a_jpeg_is_decoded_at_a_reduced_scale_and_turned():
    data = rotated_jpeg((4000, 3000))
    image = image_decode.decode_image(data)
    assert max(image.size) < 2 * image_decode.WORKING_SIZE
    assert image_decode.original_size(image) == (3000, 4000)  # as the user sees it
    assert image.size[0] < image.size[1]
    small = image_decode.decode_image(rotated_jpeg((300, 200)))  # small: untouched
    assert small.size == (200, 300) == image_decode.original_size(small)


def test_a_truncated_big_png_is_still_caught():
    data = png_bytes((3000, 3000), shade=30)
    try:
        image_decode.decode_image(data[: len(data) // 2])
    except image_decode.BadImageError as exc:
        assert "truncated" in exc.message or "corrupt" in exc.message
    else:
        raise AssertionError("a truncated PNG was accepted")


def test_the_pixel_budget_bounds_what_is_decoded_at_once():
    budget = image_decode.PixelBudget(100)
    inside, most = 0, 0
    lock = threading.Lock()

    def decode(pixels: int) -> None:
        nonlocal inside, most
        held = min(pixels, budget.capacity)  # a bigger one waits for the whole budget
        with budget.hold(pixels):
            with lock:
                inside += held
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= held

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(decode, [60, 60, 30, 30, 500, 10, 90, 40]))
    assert most == 100


def test_a_huge_photo_is_sketched_and_reported_at_its_own_size(shared_daemon):
    client, _ = shared_daemon
    data = png_bytes((5000, 3000), shade=30)
    status, body = client.post_json("/v1/jobs", job_body(data, iterations=2, levels=[2]))
    assert status == 202, body
    assert client.wait(body["id"])["state"] == protocol.DONE
    result = client.result(body["id"])
    assert result["image"] == {"width": 5000, "height": 3000}
    for path in result["levels"][0]["paths"]:
        for x, y in path["points"]:
            assert -500 < x < 5500 and -500 < y < 3500


def test_status_reads_are_answered_during_a_flood_of_big_images(start_daemon):
    client, _ = start_daemon(max_queue=32)
    first = client.submit(iterations=1, levels=[2], seed=71)
    images = [png_bytes((4000, 4000), shade=10 + i) for i in range(6)]
    polls: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            polls.append(client.get(f"/v1/jobs/{first['id']}")[0])
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(
                    lambda data: client.post_json(
                        "/v1/jobs", job_body(data, iterations=1, levels=[2])
                    ),
                    images,
                )
            )
    finally:
        done.set()
        poller.join()
    assert all(status == 202 for status, _ in answers), answers
    assert polls and set(polls) == {200}
    for _, body in answers:
        client.delete(f"/v1/jobs/{body['id']}")


def test_a_bomb_is_still_refused_before_decoding(shared_daemon):
    client, _ = shared_daemon
    image = Image.new("1", (9000, 9000))  # 81 MP, tiny as a 1-bit PNG
    out = io.BytesIO()
    image.save(out, "PNG")
    status, body = client.post_json("/v1/jobs", job_body(out.getvalue()))
    assert_error(status, body, "image_too_large")
