"""The page's routes over real HTTP (no browser): what loads without the token, what does not,
the headers that keep the page to its own origin, and the job thumbnails."""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.request

from daemon_helpers import HANG_S, job_body, png_bytes, unknown_job_id
from PIL import Image

from inkscape_clipasso import protocol


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HANG_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_page_files_load_without_the_token_but_the_api_does_not(start_daemon):
    client, _ = start_daemon(token="s3cret")
    for path, kind in [
        ("/", "text/html"),
        ("/web/app.js", "text/javascript"),
        ("/web/style.css", "text/css"),
        (f"/jobs/{unknown_job_id()}", "text/html"),
    ]:
        status, headers, body = fetch(client.url + path)
        assert status == 200, path
        assert headers["Content-Type"].startswith(kind), (path, headers)
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body
    # the document names only its own origin's files
    _, _, html = fetch(client.url + "/")
    assert b"http" not in html.replace(b"http://www.w3.org", b"")
    for path in ("/v1/jobs", "/v1/health", f"/v1/jobs/{unknown_job_id()}/thumbnail"):
        status, headers, _ = fetch(client.url + path)
        assert status == 401, path
        assert headers.get("WWW-Authenticate") == "Bearer"


def test_only_the_page_files_are_served(start_daemon):
    client, _ = start_daemon()
    for path in (
        "/web/index.html",
        "/web/../http_routes.py",
        "/web/%2e%2e/web_routes.py",
        "/web/nope.js",
        "/jobs/not-a-job-id",
        "/web/",
    ):
        status, _, body = fetch(client.url + path)
        assert status == 404, (path, status)
        assert b"import" not in body


def test_page_files_are_revalidated_by_etag(start_daemon):
    client, _ = start_daemon()
    status, headers, _ = fetch(client.url + "/web/app.js")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    status, _, body = fetch(client.url + "/web/app.js", {"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


def test_thumbnail_is_a_small_jpeg_of_the_photo_and_goes_with_the_job(start_daemon):
    client, daemon = start_daemon(token="s3cret", keep_days=1)
    photo = png_bytes((1200, 600))
    job = client.submit()  # the default 64 x 64 disc
    status, body = client.post_json(
        "/v1/jobs",
        job_body(photo),
    )
    assert status == 202, body
    wide = body["id"]
    for job_id, size in ((job["id"], (64, 64)), (wide, (256, 128))):
        code, headers, data = fetch(
            f"{client.url}/v1/jobs/{job_id}/thumbnail", {"Authorization": "Bearer s3cret"}
        )
        assert code == 200
        assert headers["Content-Type"] == "image/jpeg"
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size == size
    code, _, _ = fetch(
        f"{client.url}/v1/jobs/{unknown_job_id()}/thumbnail", {"Authorization": "Bearer s3cret"}
    )
    assert code == 404
    # deleted with the job when old jobs are pruned
    client.wait(wide)
    client.wait(job["id"])
    thumbnail = daemon.store.thumbnails_dir / f"{wide}.jpg"
    assert thumbnail.is_file()
    removed = daemon.queue.prune_finished(-1.0)
    assert wide in removed
    assert not thumbnail.exists()


def test_thumbnail_follows_the_exif_orientation(start_daemon):
    """Strokes come in the turned image's pixels, so the photo under them must be turned too."""
    client, _ = start_daemon()
    image = Image.new("RGB", (80, 40), "white")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    status, body = client.post_json("/v1/jobs", job_body(out.getvalue()))
    assert status == 202, body
    _, _, data = fetch(f"{client.url}/v1/jobs/{body['id']}/thumbnail")
    with Image.open(io.BytesIO(data)) as thumbnail:
        assert thumbnail.size == (40, 80)
    result = client.result(client.wait(body["id"])["id"])
    assert (result["image"]["width"], result["image"]["height"]) == (40, 80)


def test_the_page_watching_a_job_does_not_keep_it_from_being_abandoned(start_daemon):
    """The extension opens the job's page; Cancel in Inkscape must still free the daemon."""
    client, _ = start_daemon(abandon_after_s=1.0)
    watched = client.submit(iterations=20000)
    viewer = {"X-Clipasso-Viewer": "1"}
    deadline = time.monotonic() + HANG_S
    state = protocol.QUEUED
    while state not in protocol.FINAL_STATES and time.monotonic() < deadline:
        for path in ("", "/result?partial=1", "/thumbnail"):
            fetch(f"{client.url}/v1/jobs/{watched['id']}{path}", viewer)
        _, listed = client.get("/v1/jobs")
        state = next(j["state"] for j in listed["jobs"] if j["id"] == watched["id"])
        time.sleep(0.2)
    assert state == protocol.CANCELLED
    code, status = client.request("GET", f"/v1/jobs/{watched['id']}", headers=viewer)
    assert code == 200 and status["reason"].startswith("abandoned"), status


def test_a_refused_job_leaves_no_thumbnail(start_daemon):
    client, daemon = start_daemon(max_queue=1)
    accepted, refused = [], 0
    for _ in range(4):
        status, body = client.post_json("/v1/jobs", job_body(iterations=20000))
        if status == 202:
            accepted.append(body["id"])
        else:
            assert body["error"] == "queue_full", body
            refused += 1
    assert refused >= 1 and accepted
    thumbnails = sorted(p.stem for p in daemon.store.thumbnails_dir.iterdir())
    assert thumbnails == sorted(accepted)
    for job_id in accepted:
        client.delete(f"/v1/jobs/{job_id}")
