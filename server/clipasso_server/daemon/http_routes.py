"""The HTTP API under ``/v1``: an aiohttp application over the job queue.

Handlers never wait on the engine: status reads come from memory, and everything that touches
the disk or decodes (request bodies, images, results) runs in a thread pool. Every error is a
JSON body ``{"error": code, "message": text}`` with the status the protocol assigns to the
code; an unexpected exception is logged with its traceback and answered with a plain 500.

Decoding (request bodies, images) has its own small thread pool, so a flood of big uploads
queues there and never in front of the status and result reads, which use the default pool.
Every route first passes the Host and Origin checks of :mod:`clipasso_server.daemon.guards`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

import clipasso_server
from clipasso_server.daemon import guards
from clipasso_server.daemon.engine_bridge import EngineBridge
from clipasso_server.daemon.job_queue import Job, JobQueue, new_job_id
from clipasso_server.daemon.job_store import DamagedResultError, JobStore, json_safe
from clipasso_server.daemon.thumbnails import make_thumbnail, save_thumbnail
from clipasso_server.daemon.web_routes import add_web_routes, is_public, is_viewer
from clipasso_server.engine.errors import hide_paths
from clipasso_server.engine.image_decode import original_size
from clipasso_server.start_svg import StartSvgError, strokes_from_svg
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")
T = TypeVar("T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: how long DELETE waits for a running job to reach its next step before answering
CANCEL_WAIT_S = 10.0
#: what a 429 (queue full) tells clients to wait before trying again
RETRY_AFTER_S = 10
#: threads decoding request bodies and images (each holds at most the decode budget's pixels)
DECODE_THREADS = 2

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


@dataclass
class DaemonContext:
    """What the handlers share: the queue, the store, the engine and the limits."""

    queue: JobQueue
    store: JobStore
    engine: EngineBridge
    token: str | None
    max_body_bytes: int
    closing: bool = False
    #: which Host headers are answered; None until the socket is bound (the port is known)
    host_policy: guards.HostPolicy | None = None
    body_timeout_s: float = 120.0
    decode_pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            DECODE_THREADS, thread_name_prefix="clipasso-decode"
        )
    )


CONTEXT = web.AppKey("context", DaemonContext)


def make_app(context: DaemonContext) -> web.Application:
    """The aiohttp application serving ``/v1``."""
    app = web.Application(
        middlewares=[_errors, _guard, _auth],
        client_max_size=context.max_body_bytes,
    )
    app[CONTEXT] = context
    prefix = protocol.API_PREFIX
    app.router.add_post(f"{prefix}/jobs", submit_job)
    app.router.add_get(f"{prefix}/jobs", list_jobs)
    app.router.add_get(f"{prefix}/jobs/{{job_id}}", job_status)
    app.router.add_get(f"{prefix}/jobs/{{job_id}}/result", job_result)
    app.router.add_delete(f"{prefix}/jobs/{{job_id}}", cancel_job)
    app.router.add_get(f"{prefix}/health", health)
    app.router.add_get(f"{prefix}/jobs/{{job_id}}/thumbnail", job_thumbnail)
    app.router.add_post(f"{prefix}/start-strokes", start_strokes)
    add_web_routes(app)
    return app


def json_error(error: protocol.ProtocolError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.status)
    if error.code == "queue_full":
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer that is valid JSON: NaN and infinities are sent as null."""
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(json_safe(data), allow_nan=False)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except protocol.ProtocolError as exc:
        response = json_error(exc)
        if exc.code == "request_timeout":  # the rest of the body is not worth waiting for
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "bad_request" if exc.status < 500 else "internal")
        message = {
            "not_found": f"no such endpoint: {request.method} {request.path}",
            "method_not_allowed": f"{request.method} is not allowed on {request.path}",
            "too_large": f"the request body is larger than the limit of "
            f"{request.app[CONTEXT].max_body_bytes:,} bytes",
        }.get(code, exc.reason)
        return json_error(protocol.ProtocolError(code, message))
    except asyncio.CancelledError:
        raise
    except ConnectionError as exc:
        # the client went away (mid-upload, say): nothing to answer and nothing to fix
        log.info("client left during %s %s: %s", request.method, request.path, exc or "closed")
        return web.Response(status=400)
    except Exception:
        log.exception("internal error while answering %s %s", request.method, request.path)
        return json_error(
            protocol.ProtocolError("internal", "internal error in the daemon (see its log)")
        )


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The DNS-rebinding and cross-site checks, before anything else (the token included)."""
    guards.check_request(request.app[CONTEXT].host_policy, request.method, request.headers)
    return await handler(request)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONTEXT].token
    # the web page's static files carry no data: they load without the token, the page's
    # /v1 calls then need it like anyone's
    if token is not None and not is_public(request):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest on bytes of any length: no early exit that would leak the token;
        # aiohttp hands non-UTF-8 header bytes over as surrogates, which encode back as given
        ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())
        if scheme.lower() != "bearer" or not ok:
            response = json_error(
                protocol.ProtocolError(
                    "unauthorized", "this daemon needs 'Authorization: Bearer <token>'"
                )
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
    return await handler(request)


# --- POST /v1/jobs --------------------------------------------------------------------------


async def submit_job(request: web.Request) -> web.Response:
    """Queue a job (202), or answer with a finished identical job (200, ``cached: true``)."""
    context = request.app[CONTEXT]
    if context.closing:
        raise protocol.ProtocolError("shutting_down", "the daemon is shutting down")
    length = request.content_length
    if length is not None and length > context.max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=context.max_body_bytes, actual_size=length)
    job_request = await _read_job_request(request, context)
    context.engine.check_settings(job_request.settings)
    await _in_thread(context.engine.check_memory, job_request.settings)
    settings = job_request.settings.to_json()
    image_sha256, key, thumbnail = await _in_pool(
        context.decode_pool, _check_image, context.engine, job_request.image, job_request.settings
    )
    try:
        await _in_thread(context.engine.check_weights, job_request.settings)
    except protocol.ProtocolError as exc:
        # the folders searched are the server's business: named in its log, not to clients
        log.warning("refused a job: %s", exc.message)
        raise protocol.ProtocolError(
            exc.code, f"{hide_paths(exc.message)} (the daemon's log names the folders)"
        ) from None
    if key is not None:
        cached = await _cached_job(context, key)
        if cached is not None:
            log.info("job %s served from the cache", cached)
            return json_response(
                {"id": cached, "state": protocol.DONE, "queue_position": 0, "cached": True},
                status=200,
            )
    job = Job(
        id=new_job_id(),
        settings=settings,
        name=job_request.name,
        image=job_request.image,
        image_sha256=image_sha256,
        total=job_request.settings.iterations,
        cache_key=key,
        detached=job_request.detached,
    )
    position = await _in_thread(context.queue.submit, job)
    # after the submission, so a refused job leaves no thumbnail behind
    await _in_thread(save_thumbnail, context.store, job.id, thumbnail)
    return json_response(
        {"id": job.id, "state": protocol.QUEUED, "queue_position": position, "cached": False},
        status=202,
    )


async def _read_job_request(request: web.Request, context: DaemonContext) -> protocol.JobRequest:
    """The body as a JobRequest, read within ``body_timeout_s`` (408 ``request_timeout``)."""
    content_type = request.content_type
    if content_type == "application/json":
        reading = _read_json_request(request, context)
    elif content_type == "multipart/form-data":
        reading = _read_multipart(request, context.max_body_bytes)
    else:
        reading = None
    if reading is not None:
        return await _in_body_time(reading, context)
    raise protocol.ProtocolError(
        "unsupported_media_type",
        f"send application/json or multipart/form-data, not {content_type or 'nothing'}",
    )


async def _in_body_time(reading: Awaitable[T], context: DaemonContext) -> T:
    """``reading`` (of a request's body) within ``body_timeout_s``, else 408 ``request_timeout``."""
    try:
        return await asyncio.wait_for(reading, context.body_timeout_s)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise protocol.ProtocolError(
            "request_timeout",
            f"the request body did not arrive within {context.body_timeout_s:g} s",
        ) from None


async def _cached_job(context: DaemonContext, key: str) -> str | None:
    """A finished job with this cache key whose stored result is whole; a damaged one is
    dropped (and its job marked failed) so that the request runs afresh."""

    def key_of(record: dict[str, Any]) -> str | None:
        return context.engine.cache_key(record["image_sha256"], record["settings"])

    cached = await _in_thread(context.store.cache_lookup, key, key_of)
    if cached is None or context.queue.state(cached) != protocol.DONE:
        return None
    if context.queue.result_in_memory(cached) is not None:
        return cached
    try:
        await _in_thread(context.store.check_result, cached)
    except DamagedResultError as exc:
        await _in_thread(context.queue.result_lost, cached, exc.message)
        return None
    return cached


async def _read_json_request(request: web.Request, context: DaemonContext) -> protocol.JobRequest:
    body = await request.read()
    return await _in_pool(context.decode_pool, _parse_json_request, body)


def _parse_json_request(body: bytes) -> protocol.JobRequest:
    return protocol.parse_job_request(_json_body(body))


def _json_body(body: bytes) -> Any:
    """A request body as JSON, else 400 ``bad_json``."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise protocol.ProtocolError("bad_json", f"the body is not valid JSON: {exc}") from None


def _check_image(
    engine: EngineBridge, image: bytes, settings: protocol.SketchSettings
) -> tuple[str, str | None, bytes]:
    """Decode the image (once): its sha256, the cache key and the job's thumbnail. The start
    strokes must lie on the photo (in its own pixels), which only its size tells."""
    decoded = engine.check_image(image)
    protocol.check_start_strokes_inside(settings, *original_size(decoded))
    thumbnail = make_thumbnail(decoded)
    digest = hashlib.sha256(image).hexdigest()
    return digest, engine.cache_key(digest, settings.to_json()), thumbnail


async def _read_multipart(request: web.Request, limit: int) -> protocol.JobRequest:
    """A multipart body: an ``image`` file part, optional ``settings`` (JSON) and ``name``."""
    try:
        parts = await _multipart_parts(request, limit)
    except protocol.ProtocolError:
        raise
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        message = f"malformed multipart body: {exc}".strip()
        raise protocol.ProtocolError("bad_request", message) from None
    if not parts.get("image"):
        raise protocol.ProtocolError("bad_request", "the request has no image part")
    settings = None
    if "settings" in parts:
        try:
            settings = json.loads(parts["settings"])
        except (ValueError, RecursionError) as exc:
            raise protocol.ProtocolError(
                "bad_json", f"the settings part is not valid JSON: {exc}"
            ) from None
    try:
        name = parts.get("name", b"").decode("utf-8")
    except UnicodeDecodeError:
        raise protocol.ProtocolError("bad_request", "the name part is not UTF-8 text") from None
    if len(name) > 256:
        raise protocol.ProtocolError("bad_request", "name must be at most 256 characters")
    detached = parts.get("detached", b"false").strip().lower()
    if detached not in (b"true", b"false"):
        raise protocol.ProtocolError("bad_request", "the detached part must be true or false")
    return protocol.JobRequest(
        image=parts["image"],
        settings=protocol.parse_settings(settings),
        name=name,
        detached=detached == b"true",
    )


async def _multipart_parts(request: web.Request, limit: int) -> dict[str, bytes]:
    """The parts of a multipart body by name, at most ``limit`` bytes in all."""
    reader = await request.multipart()
    parts: dict[str, bytes] = {}
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise protocol.ProtocolError("bad_request", "nested multipart bodies are not accepted")
        name = part.name or ""
        if name not in protocol.JOB_REQUEST_FIELDS:
            raise protocol.ProtocolError("unknown_field", f"unknown multipart part {name!r}")
        if name in parts:
            raise protocol.ProtocolError("bad_request", f"the part {name!r} is given twice")
        chunks = []
        while chunk := await part.read_chunk():
            total += len(chunk)
            if total > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
            chunks.append(chunk)
        parts[name] = b"".join(chunks)
    return parts


# --- POST /v1/start-strokes ----------------------------------------------------------------


async def start_strokes(request: web.Request) -> web.Response:
    """An SVG drawing's paths as start strokes in the photo's pixels (the web page sends its
    "Start strokes (SVG)" file here, then the strokes with the job): the same converter as
    ``clipasso sketch --start-svg``."""
    context = request.app[CONTEXT]
    if request.content_type != "application/json":
        raise protocol.ProtocolError(
            "unsupported_media_type",
            f"send application/json, not {request.content_type or 'nothing'}",
        )
    body = await _in_body_time(request.read(), context)
    strokes = await _in_pool(context.decode_pool, _convert_start_svg, body)
    return json_response(protocol.start_strokes_response(strokes))


def _convert_start_svg(body: bytes) -> tuple:
    drawing = protocol.parse_start_strokes_request(_json_body(body))
    try:
        strokes = strokes_from_svg(
            drawing.svg, drawing.width, drawing.height, limit=protocol.MAX_STROKES
        )
    except StartSvgError as exc:
        raise protocol.ProtocolError(exc.code, exc.message) from None
    protocol.check_start_strokes_inside(
        protocol.SketchSettings(start_strokes=strokes), drawing.width, drawing.height
    )
    return strokes


# --- GET/DELETE /v1/jobs/{id} ---------------------------------------------------------------


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not protocol.is_job_id(job_id) or not request.app[CONTEXT].queue.known(job_id):
        raise protocol.ProtocolError("not_found", f"no job with id {job_id!r}")
    return job_id


async def job_status(request: web.Request) -> web.Response:
    """State, queue position, progress, best losses, times and error of one job."""
    queue = request.app[CONTEXT].queue
    job_id = _job_id(request)
    # the web page only watches: a job whose client went away (Cancel in Inkscape) must
    # still be abandoned while the page shows it
    if not is_viewer(request):
        queue.touch(job_id)
    return json_response(queue.status(job_id))


async def list_jobs(request: web.Request) -> web.Response:
    """Every job's status body, newest first: ``{"jobs": [...]}`` (the web page's list).
    Not a sign that a client still waits for any of them (no touch)."""
    return json_response({"jobs": request.app[CONTEXT].queue.statuses()})


async def job_result(request: web.Request) -> web.Response:
    """The stored result of a finished job (409 ``not_ready`` before that); with
    ``?partial=1`` the best strokes so far of a running, cancelled or interrupted job."""
    context = request.app[CONTEXT]
    job_id = _job_id(request)
    if not is_viewer(request):
        context.queue.touch(job_id)
    state = context.queue.state(job_id)
    if request.query.get("partial") in ("1", "true") and state != protocol.DONE:
        return await _partial_result(context, job_id, state)
    if state != protocol.DONE:
        hint = "; poll its status" if state in (protocol.QUEUED, protocol.RUNNING) else ""
        raise protocol.ProtocolError(
            "not_ready", f"job {job_id} is {state} and has no result{hint}"
        )
    body = context.queue.result_in_memory(job_id)  # finished, but not saved to disk yet
    if body is None:
        try:
            body = await _in_thread(context.store.result_bytes, job_id)
        except DamagedResultError as exc:
            await _in_thread(context.queue.result_lost, job_id, exc.message)
            raise protocol.ProtocolError(
                "not_ready", f"job {job_id} has failed: {exc.message}"
            ) from None
    if body is None:
        raise protocol.ProtocolError("not_found", f"the result of job {job_id} is missing")
    return web.Response(body=body, content_type="application/json")


async def _partial_result(context: DaemonContext, job_id: str, state: str | None) -> web.Response:
    """The latest best-so-far snapshot: from memory while the job runs, from disk once it
    ended unfinished (as of the last save, if the daemon was killed); 409 ``not_ready``
    before the first one."""
    snapshot = context.queue.partial(job_id)
    if snapshot is not None:
        return json_response({**snapshot, "id": job_id, "partial": True})
    if state in (protocol.CANCELLED, protocol.INTERRUPTED, protocol.FAILED):
        try:
            body = await _in_thread(context.store.partial_bytes, job_id)
        except DamagedResultError:
            body = None
        if body is not None:
            return web.Response(body=body, content_type="application/json")
    raise protocol.ProtocolError(
        "not_ready", f"job {job_id} is {state} and has no strokes to show yet; poll its status"
    )


async def job_thumbnail(request: web.Request) -> web.Response:
    """A small JPEG of the job's photo (the web page's list and previews); not a sign that a
    client still waits for the job, so it does not keep the job from being abandoned."""
    context = request.app[CONTEXT]
    job_id = _job_id(request)
    body = await _in_thread(context.store.thumbnail_bytes, job_id)
    if body is None:
        raise protocol.ProtocolError("not_found", f"job {job_id} has no thumbnail")
    return web.Response(
        body=body, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a job; answers with its status once it has stopped (or after CANCEL_WAIT_S)."""
    queue = request.app[CONTEXT].queue
    job_id = _job_id(request)
    await _in_thread(queue.cancel, job_id, "cancelled by request")
    deadline = time.monotonic() + CANCEL_WAIT_S
    while queue.state(job_id) not in protocol.FINAL_STATES and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return json_response(queue.status(job_id))


# --- GET /v1/health -------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """Version, protocol, device, loaded models and queue length."""
    context = request.app[CONTEXT]
    workers = context.engine.workers_info()
    return json_response(
        {
            "version": clipasso_server.__version__,
            "protocol": protocol.PROTOCOL_VERSION,
            "device": context.engine.device_of(workers),
            "models_loaded": context.engine.models_of(workers),
            "queue_length": context.queue.queue_length(),
            "shutting_down": context.closing,
            "workers": workers,
        }
    )


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def _in_pool(
    pool: concurrent.futures.Executor, function: Callable[..., Any], *args: Any
) -> Any:
    return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
