"""Probe a real ``clipasso serve``: hostile requests, and a flood of small files that decode huge.

1. Sends a fixed set of bad requests over raw sockets (foreign Host names, cross-site
   Origins, malformed HTTP, bad JSON, NaN, a decompression bomb, a truncated image, path
   traversal) and counts the answers: 4xx, 5xx, anything that is not JSON, and crashes (the
   daemon gone or /v1/health failing afterwards).
2. Floods it with ``--flood`` (default 12) PNGs of 7000 x 7000 pixels (about 140 KB each)
   submitted at once, while one thread polls a job's status every 50 ms. Reports the HTTP
   process's resident memory (before, peak, 5 s after), the workers' too, how long each
   submission took, and the status polls' latency during the flood (median, p95, max).
3. The same with ``--bomb-flood`` (default 4) 16-bit greyscale PNGs of 7000 x 7000 (126 KB
   each, 98 MB decoded as 16-bit) and one 7000 x 7000 JPEG 2000: the HTTP process's peak
   (sampled, and the kernel's high-water mark VmHWM at the end; target under 0.5 GB).
4. ``--idle`` (default 400) idle connections held open by this process, then 50 plain
   requests: how many were answered 200 and how many 429.

    python bench/probe_daemon.py [--flood 12] [--size 7000] [--bomb-flood 4] [--idle 400]
                                 [--out bench/results/probe.json]

Uses the tiny test models (their weights are written to a temporary folder first), the CPU
and a temporary state folder.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from report import write_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT))

TINY = {"loss_model": "test-tiny-rn", "saliency_model": "test-tiny-vit"}


def tagged(png: bytes, tag: str) -> bytes:
    """``png`` with a tEXt chunk after IHDR: other bytes, the same pixels, no re-encoding."""
    data = b"probe\x00" + tag.encode()
    chunk = len(data).to_bytes(4, "big") + b"tEXt" + data
    chunk += zlib.crc32(b"tEXt" + data).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]


def big_png(size: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).ellipse((size // 5, size // 5, size * 4 // 5, size * 4 // 5), fill=20)
    out = io.BytesIO()
    image.convert("RGB").save(out, "PNG", compress_level=9)
    return out.getvalue()


def small_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def job_json(image: bytes, **settings: Any) -> bytes:
    body = {
        "image": base64.b64encode(image).decode(),
        "settings": {"levels": [2], "iterations": 2, "seeds": 1, **TINY, **settings},
    }
    return json.dumps(body).encode()


def rss_mb(pid: int) -> float:
    """Resident memory in MiB, 0 where unreadable (the process is gone)."""
    from clipasso_server.daemon.worker_process import rss_bytes

    return (rss_bytes(pid) or 0) / 2**20


def children(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (the workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def raw(port: int, request: bytes, timeout: float = 30.0) -> tuple[int | None, bool]:
    """Send ``request`` as is; (status or None, whether the body was JSON)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None, False
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, False
    try:
        json.loads(body, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
        return status, True
    except ValueError:
        return status, False


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b""):
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def probe_cases(port: int) -> list[tuple[str, bytes]]:
    host = {"Host": f"127.0.0.1:{port}"}
    js = {**host, "Content-Type": "application/json"}
    image = small_png()
    bomb = io.BytesIO()
    from PIL import Image

    Image.new("1", (10000, 10000)).save(bomb, "PNG")
    cases = [
        ("host evil", http_request("GET", "/v1/health", port, {"Host": "evil.example"})),
        ("host evil:port", http_request("GET", "/v1/health", port, {"Host": f"e.x:{port}"})),
        ("host other port", http_request("GET", "/v1/health", port, {"Host": "127.0.0.1:1"})),
        ("host missing", b"GET /v1/health HTTP/1.0\r\n\r\n"),
        ("host userinfo", http_request("GET", "/", port, {"Host": f"a@127.0.0.1:{port}"})),
        ("origin evil", http_request("POST", "/v1/jobs", port, {**js, "Origin": "http://e.x"},
                                     job_json(image))),
        ("origin null", http_request("POST", "/v1/jobs", port, {**js, "Origin": "null"},
                                     job_json(image))),
        ("cross-site", http_request("POST", "/v1/jobs", port,
                                    {**js, "Sec-Fetch-Site": "cross-site"}, job_json(image))),
        ("same-site", http_request("GET", "/v1/health", port,
                                   {**host, "Sec-Fetch-Site": "same-site"})),
        ("garbage", b"GARBAGE\r\n\r\n"),
        ("bad version", b"GET / HTTP/9.9\r\n\r\n"),
        ("long header", http_request("GET", "/v1/health", port, {**host, "X": "a" * 20000})),
        ("negative length", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ("smuggling", b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("not json", http_request("POST", "/v1/jobs", port, js, b"{nope")),
        ("nan", http_request("POST", "/v1/jobs", port, js,
                             job_json(image).replace(b'"iterations": 2', b'"iterations": NaN'))),
        ("huge number", http_request("POST", "/v1/jobs", port, js,
                                     job_json(image).replace(b'"iterations": 2',
                                                             b'"iterations": 1e999'))),
        ("wrong type", http_request("POST", "/v1/jobs", port, js,
                                    job_json(image).replace(b'"seeds": 1', b'"seeds": [1]'))),
        ("deep json", http_request("POST", "/v1/jobs", port, js, b"[" * 100000)),
        ("bomb", http_request("POST", "/v1/jobs", port, js, job_json(bomb.getvalue()))),
        ("truncated", http_request("POST", "/v1/jobs", port, js, job_json(image[:60]))),
        ("no image", http_request("POST", "/v1/jobs", port, js, b"{}")),
        ("traversal", http_request("GET", "/v1/jobs/..%2f..%2fetc%2fpasswd", port, host)),
        ("traversal 2", http_request("GET", "/v1/jobs/../../etc/passwd/result", port, host)),
        ("unknown route", http_request("GET", "/v2/anything", port, host)),
        ("wrong method", http_request("PUT", "/v1/jobs", port, host)),
        ("unknown id", http_request("GET", "/v1/jobs/" + "0" * 32, port, host)),
        ("media type", http_request("POST", "/v1/jobs", port, {**host, "Content-Type": "text/x"},
                                    b"x")),
        ("auth control byte", http_request("GET", "/v1/health", port,
                                           {**host, "Authorization": "Bearer to\x01ken"})),
        ("auth non-ascii", http_request("GET", "/v1/health", port, host).replace(
            b"Connection: close", b"Authorization: Bearer tok\xffen\r\nConnection: close")),
        ("fetch-site list", http_request("POST", "/v1/jobs", port,
                                         {**js, "Sec-Fetch-Site": "same-origin, cross-site"},
                                         job_json(image))),
        ("dds header", http_request("POST", "/v1/jobs", port, js, job_json(dds_header()))),
        ("avif damaged", http_request("POST", "/v1/jobs", port, js, job_json(damaged_avif()))),
        ("jpeg no end", http_request("POST", "/v1/jobs", port, js, job_json(jpeg()[:-2]))),
        ("16-bit bomb", http_request("POST", "/v1/jobs", port, js,
                                     job_json(sixteen_bit(10000)))),
    ]  # fmt: skip
    return cases


def sixteen_bit(side: int, shade: int = 1000) -> bytes:
    """A 16-bit greyscale PNG, tiny on disk, ``side`` x ``side`` decoded."""
    from PIL import Image, ImageDraw

    image = Image.new("I;16", (side, side), shade)
    ImageDraw.Draw(image).ellipse((side // 4, side // 4, side * 3 // 4, side * 3 // 4), 60000)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg2000(side: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(out, "JPEG2000")
    return out.getvalue()


def jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (256, 256), (20, 90, 160)).save(out, "JPEG")
    return out.getvalue()


def dds_header() -> bytes:
    """128 bytes of DDS header with a pixel format Pillow does not implement."""
    import struct

    return (b"DDS " + struct.pack("<7I", 124, 0x1007, 64, 64, 0, 0, 0) + bytes(44)
            + struct.pack("<2I4s5I", 32, 4, b"XYZW", 0, 0, 0, 0, 0)
            + struct.pack("<5I", 0x1000, 0, 0, 0, 0))  # fmt: skip


def damaged_avif() -> bytes:
    """An AVIF with the first flipped byte that makes Pillow raise RuntimeError."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, "AVIF")
    data = out.getvalue()
    for index in range(len(data)):
        damaged = bytearray(data)
        damaged[index] ^= 0xFF
        try:
            Image.open(io.BytesIO(bytes(damaged))).load()
        except RuntimeError:
            return bytes(damaged)
        except Exception:
            continue
    return data[: len(data) // 2]


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's resident memory (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def bomb_flood(port: int, pid: int, count: int) -> dict[str, Any]:
    """``count`` 16-bit bombs and one 7000 x 7000 JPEG 2000 at once: the HTTP process's peak."""
    url = f"http://127.0.0.1:{port}"
    images = [sixteen_bit(7000, 1000 + i) for i in range(count)] + [jpeg2000(7000)]
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mb(pid))
            time.sleep(0.02)

    def submit(image: bytes) -> tuple[int, float, str | None]:
        started = time.monotonic()
        request = urllib.request.Request(
            f"{url}/v1/jobs", data=job_json(image, iterations=1),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, body = error.code, {}
        return status, time.monotonic() - started, body.get("id")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = rss_mb(pid)
    started = time.monotonic()
    with ThreadPoolExecutor(len(images)) as pool:
        submits = list(pool.map(submit, images))
    took = time.monotonic() - started
    stop.set()
    sampler.join(5)
    for _, _, job_id in submits:
        if job_id:
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/v1/jobs/{job_id}", method="DELETE"), timeout=60
            ).read()
    return {
        "images": f"{count} x 16-bit PNG 7000 x 7000 + 1 JPEG 2000 7000 x 7000",
        "png_bytes": len(images[0]),
        "submit_statuses": sorted({s for s, _, _ in submits}),
        "submit_s_max": max(t for _, t, _ in submits),
        "flood_s": took,
        "http_rss_mb": {"before": before, "peak_sampled": max(samples or [before])},
    }


def idle_lockout(port: int, idle: int, tries: int = 50) -> dict[str, Any]:
    """``idle`` connections that never send a byte, then ``tries`` plain requests."""
    held = []
    for _ in range(idle):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        except OSError:
            break
    time.sleep(1.0)
    answers: dict[str, int] = {}
    for _ in range(tries):
        status, _ = raw(port, http_request("GET", "/v1/health", port,
                                           {"Host": f"127.0.0.1:{port}"}))  # fmt: skip
        answers[str(status)] = answers.get(str(status), 0) + 1
    for sock in held:
        sock.close()
    return {"idle_held": len(held), "requests": tries, "answers": answers}


def run_probes(port: int, pid: int) -> dict[str, Any]:
    answers = {}
    for name, request in probe_cases(port):
        status, is_json = raw(port, request)
        answers[name] = {"status": status, "json": is_json}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=30) as response:
        healthy = response.status == 200
    statuses = [a["status"] for a in answers.values()]
    return {
        "cases": len(answers),
        "4xx": sum(1 for s in statuses if s is not None and 400 <= s < 500),
        "5xx": sum(1 for s in statuses if s is not None and s >= 500),
        "2xx": sum(1 for s in statuses if s is not None and s < 300),
        "no_answer": sum(1 for s in statuses if s is None),
        "not_json": [n for n, a in answers.items() if a["status"] and not a["json"]],
        "crashes": 0 if healthy and _alive(pid) else 1,
        "answers": answers,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def flood(port: int, pid: int, count: int, size: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    base = big_png(size)
    images = [tagged(base, f"{i}-{time.time()}") for i in range(count)]
    bodies = [job_json(image, iterations=1) for image in images]
    request = urllib.request.Request(
        f"{url}/v1/jobs",
        data=job_json(small_png(), iterations=20000),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        watched = json.loads(response.read())["id"]

    samples: list[tuple[float, float, float]] = []
    polls: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            kids = sum(rss_mb(child) for child in children(pid))
            samples.append((time.monotonic(), rss_mb(pid), kids))
            time.sleep(0.05)

    def poll() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with urllib.request.urlopen(f"{url}/v1/jobs/{watched}", timeout=120) as response:
                response.read()
            polls.append(time.monotonic() - started)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(1.0)
    before = rss_mb(pid)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def submit(body: bytes) -> tuple[int, float]:
        started = time.monotonic()
        request = urllib.request.Request(
            f"{url}/v1/jobs", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        return status, time.monotonic() - started

    flood_started = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        submits = list(pool.map(submit, bodies))
    flood_s = time.monotonic() - flood_started
    flood_polls = list(polls)
    time.sleep(5.0)
    stop.set()
    poller.join(5)
    sampler.join(5)
    after = rss_mb(pid)
    peak = max(s[1] for s in samples)
    peak_workers = max(s[2] for s in samples)
    urllib.request.urlopen(urllib.request.Request(f"{url}/v1/jobs/{watched}", method="DELETE"))
    return {
        "images": count,
        "image_pixels": f"{size} x {size}",
        "png_bytes": len(images[0]),
        "submit_statuses": sorted({s for s, _ in submits}),
        "submit_s": {"median": statistics.median(t for _, t in submits),
                     "max": max(t for _, t in submits)},
        "flood_s": flood_s,
        "http_rss_mb": {"before": before, "peak": peak, "after_5s": after},
        "workers_rss_mb_peak": peak_workers,
        "status_poll_s": {
            "count": len(flood_polls),
            "median": statistics.median(flood_polls) if flood_polls else None,
            "p95": sorted(flood_polls)[int(0.95 * (len(flood_polls) - 1))] if flood_polls else None,
            "max": max(flood_polls) if flood_polls else None,
        },
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=12)
    parser.add_argument("--size", type=int, default=7000)
    parser.add_argument("--bomb-flood", type=int, default=4)
    parser.add_argument("--idle", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "probe.json")
    args = parser.parse_args()

    from clipasso_server.engine.clip_models import write_test_weights

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights"
        weights.mkdir()
        write_test_weights(weights)
        serve = subprocess.Popen(
            [sys.executable, "-m", "clipasso_server.cli", "serve", "--port", "0",
             "--device", "cpu", "--no-download", "--state-dir", str(Path(tmp) / "state"),
             "--clip-weights", str(weights), "--max-queue", "64"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1"),
        )  # fmt: skip
        try:
            line = serve.stdout.readline()
            port = int(line.split("listening on http://127.0.0.1:")[1].split()[0])
            time.sleep(3.0)  # let the worker come up
            probes = run_probes(port, serve.pid)
            flooded = flood(port, serve.pid, args.flood, args.size)
            bombs = bomb_flood(port, serve.pid, args.bomb_flood)
            bombs["http_peak_mb_whole_run"] = peak_rss_mb(serve.pid)
            lockout = idle_lockout(port, args.idle)
        finally:
            serve.terminate()
            _, stderr = serve.communicate(timeout=60)
    report = {"probes": probes, "flood": flooded, "bomb_flood": bombs, "idle_lockout": lockout,
              "log_bytes": len(stderr), "log_tracebacks": stderr.count("Traceback"),
              "log_has_token_bytes": "to\\x01ken" in stderr or "tok\\xffen" in stderr}  # fmt: skip
    summary = {k: v for k, v in probes.items() if k != "answers"}
    print(f"probes: {json.dumps(summary)}")
    print(f"flood:  {json.dumps(flooded, default=lambda v: round(v, 3))}")
    print(f"bombs:  {json.dumps(bombs, default=lambda v: round(v, 3))}")
    print(f"idle:   {json.dumps(lockout)}")
    print(f"log: {len(stderr)} bytes, {report['log_tracebacks']} tracebacks")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
