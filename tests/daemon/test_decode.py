"""Small files that decode huge: a working copy, the photo's own size kept, a pixel budget.

``bench/probe_daemon.py`` measures memory and status-poll latency under a flood of such
files; here the behaviours are pinned with real Pillow decodes and a real daemon.
"""

from __future__ import annotations

import io
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from daemon_helpers import Client, assert_error, job_body, png_bytes
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


def test_the_decode_budget_bounds_what_is_decoded_at_once():
    budget = image_decode.DecodeBudget(100)
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


def image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def sixteen_bit_bomb(side: int = 7000, shade: int = 1000) -> bytes:
    """A 16-bit greyscale PNG of ``side`` x ``side`` that is a few dozen KB on disk."""
    image = Image.new("I;16", (side, side), shade)
    ImageDraw.Draw(image).ellipse((side // 4, side // 4, side * 3 // 4, side * 3 // 4), 60000)
    return image_bytes(image, "PNG")


class RecordingBudget(image_decode.DecodeBudget):
    """The real budget, remembering what each decode held."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.held: list[int] = []

    def hold(self, amount: int):
        self.held.append(amount)
        return super().hold(amount)


@pytest.mark.parametrize(
    ("mode", "fmt", "per_pixel"),
    [
        ("L", "PNG", 1),
        ("RGB", "PNG", 4),  # Pillow keeps 3 bands in 4 bytes
        ("RGBA", "PNG", 4),
        ("I;16", "PNG", 2),
        ("I", "TIFF", 4),  # 4 bytes a pixel, and libtiff's own strip beside it
        ("F", "TIFF", 4),
    ],
)
def test_every_decode_holds_its_bytes_from_the_budget(monkeypatch, mode, fmt, per_pixel):
    budget = RecordingBudget(image_decode.DECODE_BUDGET_BYTES)
    monkeypatch.setattr(image_decode, "DECODE_BUDGET", budget)
    image = Image.new(mode, (300, 200), 7)
    data = image_bytes(image, fmt)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == mode
    strip = 300 * opened.tag_v2[278] * per_pixel if fmt == "TIFF" else 0
    decoded = image_decode.decode_image(data)
    assert decoded.mode == "RGB" and decoded.size == (300, 200)
    assert budget.held == [300 * 200 * per_pixel + strip]


def tiff_header(width: int, height: int, rows_per_strip: int | None) -> bytes:
    """The header of an 8-bit RGB TIFF (its pixels left out: only its cost is asked)."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, 0),  # 8, 8, 8 bits, stored after the IFD
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 200),
        (277, 3, 1, 3),
        (279, 4, 1, width * (rows_per_strip or height) * 3),
    ]
    if rows_per_strip:
        entries.insert(7, (278, 4, 1, rows_per_strip))
    entries[2] = (258, 3, 3, 8 + 2 + 12 * len(entries) + 4)
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII" if kind == 4 else "<HHIHxx", tag, kind, count, value)
        for tag, kind, count, value in entries
    )
    head = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    return head + struct.pack("<3H", 8, 8, 8)


def test_a_50_megapixel_photo_fits_the_budget_as_tiff_too():
    """libtiff holds one strip beside the image: a few rows for the files cameras, scanners
    and Pillow write, the whole image again only for a file stored as a single strip."""
    side = (10_000, 5_000)
    striped = Image.open(io.BytesIO(tiff_header(*side, rows_per_strip=16)))
    assert striped.mode == "RGB" and striped.size == side
    assert image_decode.decode_cost(striped) <= image_decode.DECODE_BUDGET_BYTES
    whole = Image.open(io.BytesIO(tiff_header(*side, rows_per_strip=None)))
    assert image_decode.decode_cost(whole) == 2 * 4 * 50_000_000


def test_a_jpeg_2000_is_decoded_at_a_reduced_scale(monkeypatch):
    budget = RecordingBudget(image_decode.DECODE_BUDGET_BYTES)
    monkeypatch.setattr(image_decode, "DECODE_BUDGET", budget)
    data = image_bytes(Image.new("RGB", (4100, 2050), "white"), "JPEG2000")
    image = image_decode.decode_image(data)
    assert image_decode.original_size(image) == (4100, 2050)
    assert image.size == (1025, 513)  # decoded at a quarter size by OpenJPEG itself
    # the pixels at that size and OpenJPEG's 32-bit buffers for 3 components: not full size
    assert budget.held == [1025 * 513 * (4 + 12)]


def test_a_decode_costing_more_than_the_budget_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(image_decode, "DECODE_BUDGET", RecordingBudget(1_000_000))
    data = image_bytes(Image.new("I;16", (1000, 600)), "PNG")  # 1.2 MB decoded
    with pytest.raises(image_decode.ImageTooLargeError, match="MB"):
        image_decode.decode_image(data)
    assert image_decode.DECODE_BUDGET.held == []  # refused before anything was decoded


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_16_bit_bomb_flood_keeps_the_http_process_small(
    serve_process, tmp_path, test_weights_dir
):
    """The README's promise: the HTTP process stays under half a gigabyte whatever arrives
    (a 97 KB 16-bit PNG once took it to 1.42 GB, a 7000 x 7000 JPEG 2000 to 966 MB)."""
    process = serve_process(
        [
            "--port", "0", "--device", "cpu", "--no-download", "--max-queue", "32",
            "--state-dir", str(tmp_path / "state"), "--clip-weights", str(test_weights_dir),
        ]
    )  # fmt: skip
    client = Client(process.wait_ready())
    bombs = [sixteen_bit_bomb(shade=1000 + i) for i in range(4)]  # not one job 4 times
    assert all(len(bomb) < 200_000 for bomb in bombs)
    j2k = image_bytes(Image.new("RGB", (7000, 7000), "white"), "JPEG2000")
    images = [*bombs, j2k]
    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(
            pool.map(
                lambda data: client.post_json("/v1/jobs", job_body(data, iterations=1, levels=[2])),
                images,
            )
        )
    assert [status for status, _ in answers] == [202] * len(images), answers
    peak = _peak_rss(process.process.pid)
    for _, body in answers:
        client.delete(f"/v1/jobs/{body['id']}")
    assert peak < 500 * 2**20, f"{peak / 2**20:.0f} MB"
    assert process.terminate() == 0


def _damaged_avif() -> bytes:
    """An AVIF with one byte flipped where Pillow's AVIF plugin raises RuntimeError."""
    data = image_bytes(Image.new("RGB", (32, 32), (200, 30, 30)), "AVIF")
    for index in range(len(data)):
        damaged = bytearray(data)
        damaged[index] ^= 0xFF
        try:
            Image.open(io.BytesIO(bytes(damaged))).load()
        except RuntimeError:
            return bytes(damaged)
        except Exception:
            continue
    pytest.skip("no single flipped byte makes this Pillow's AVIF plugin raise RuntimeError")


def _dds_header() -> bytes:
    """A 128-byte DDS header with a pixel format Pillow does not implement."""
    import struct

    return (
        b"DDS "
        + struct.pack("<7I", 124, 0x1007, 64, 64, 0, 0, 0)
        + bytes(44)
        + struct.pack("<2I4s5I", 32, 4, b"XYZW", 0, 0, 0, 0, 0)
        + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    )


def _jpeg() -> bytes:
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).ellipse((30, 30, 220, 220), fill=(20, 90, 160))
    data = image_bytes(image, "JPEG", quality=90)
    assert data.endswith(b"\xff\xd9")
    return data


@pytest.mark.parametrize(
    "make",
    [_dds_header, _damaged_avif, lambda: _jpeg()[:-2], lambda: _jpeg()[:-800]],
    ids=["dds-not-implemented", "avif-runtime-error", "jpeg-no-end-marker", "jpeg-cut-off"],
)
def test_every_decoder_failure_is_bad_image(shared_daemon, make):
    client, _ = shared_daemon
    status, body = client.post_json("/v1/jobs", job_body(make()))
    assert_error(status, body, "bad_image")
    assert "/" not in body["message"], body  # no server paths, no object reprs


def test_one_rule_for_cut_off_jpegs():
    """The end marker decides: without one after the last scan the file was cut off and is
    refused, however much data came before it; with one it is decoded as libjpeg and image
    viewers do (scan data that ends early shows as grey)."""
    whole = _jpeg()
    for cut in (2, 3, 100, 800, 3000):
        with pytest.raises(image_decode.BadImageError, match="truncated"):
            image_decode.decode_image(whole[:-cut])
    ends_early = image_decode.decode_image(whole[:-800] + b"\xff\xd9")
    assert ends_early.getpixel((128, 250)) == (128, 128, 128)
    assert image_decode.decode_image(whole).getpixel((128, 250)) == (255, 255, 255)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_jpeg_with_data_after_its_end_marker_is_whole(progressive):
    """A phone's "motion photo" appends a video after the JPEG's end marker; its bytes hold
    FF DA and FF D9 at random. The JPEG ends at its own end marker and decodes as Pillow
    decodes it; cut before that marker it is still refused."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=(20, 90, 160))
    whole = image_bytes(image, "JPEG", quality=90, progressive=progressive)
    video = b"ftypmp42" + bytes(100) + b"\xff\xda" + bytes(50)
    motion = whole + video
    assert Image.open(io.BytesIO(motion)).load() is not None  # Pillow reads it
    assert image_decode.decode_image(motion).size == (64, 64)
    assert image_decode.decode_image(whole + b"\xff\xd9" + video).size == (64, 64)
    with pytest.raises(image_decode.BadImageError, match="truncated"):
        image_decode.decode_image(whole[:-2] + video)
    # the rule itself, not only Pillow's own refusal: cut anywhere, the walk runs out first
    for cut in (2, 3, 100, 400):
        assert not image_decode._jpeg_is_whole(whole[:-cut]), cut
        assert not image_decode._jpeg_is_whole(whole[:-cut] + video), cut
    assert image_decode._jpeg_is_whole(whole + video)


def test_the_pixel_limit_named_is_the_daemons_own(shared_daemon):
    client, _ = shared_daemon
    for side in (8000, 12000):  # over --max-pixels; over Pillow's own warning limit too
        data = image_bytes(Image.new("1", (side, side)), "PNG")
        status, body = client.post_json("/v1/jobs", job_body(data))
        assert_error(status, body, "image_too_large")
        assert "--max-pixels" in body["message"] and "50,000,000" in body["message"], body
        assert "89,478,485" not in body["message"] and "DOS" not in body["message"], body
