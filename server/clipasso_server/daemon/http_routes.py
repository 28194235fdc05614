"""The HTTP API under ``/v1``: an aiohttp application over the job queue.

Handlers never wait on the engine: status reads come from memory, and everything that touches
the disk or decodes (request bodies, images, results) runs in a thread pool. Every error is a
JSON body ``{"error": code, "message": text}`` with the status the protocol assigns to the
code; an unexpected exception is logged with its traceback and answered with a plain 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

import clipasso_server
from clipasso_server.daemon.engine_bridge import EngineBridge
from clipasso_server.daemon.job_queue import Job, JobQueue, new_job_id
from clipasso_server.daemon.job_store import JobStore
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: how long DELETE waits for a running job to reach its next step before answering
CANCEL_WAIT_S = 10.0

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


CONTEXT = web.AppKey("context", DaemonContext)


def make_app(context: DaemonContext) -> web.Application:
    """The aiohttp application serving ``/v1``."""
    app = web.Application(
        middlewares=[_errors, _auth],
        client_max_size=context.max_body_bytes,
    )
    app[CONTEXT] = context
    prefix = protocol.API_PREFIX
    app.router.add_post(f"{prefix}/jobs", submit_job)
    app.router.add_get(f"{prefix}/jobs/{{job_id}}", job_status)
    app.router.add_get(f"{prefix}/jobs/{{job_id}}/result", job_result)
    app.router.add_delete(f"{prefix}/jobs/{{job_id}}", cancel_job)
    app.router.add_get(f"{prefix}/health", health)
    return app


def json_error(error: protocol.ProtocolError) -> web.Response:
    return web.json_response(error.to_json(), status=error.status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except protocol.ProtocolError as exc:
        return json_error(exc)
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
    except Exception:
        log.exception("internal error while answering %s %s", request.method, request.path)
        return json_error(
            protocol.ProtocolError("internal", "internal error in the daemon (see its log)")
        )


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONTEXT].token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest on bytes of any length: no early exit that would leak the token.
        ok = hmac.compare_digest(given.strip().encode(), token.encode())
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
    content_type = request.content_type
    if content_type == "application/json":
        body = await request.read()
        job_request = await _in_thread(_parse_json_request, body)
    elif content_type == "multipart/form-data":
        job_request = await _read_multipart(request, context.max_body_bytes)
    else:
        raise protocol.ProtocolError(
            "unsupported_media_type",
            f"send application/json or multipart/form-data, not {content_type or 'nothing'}",
        )
    context.engine.check_settings(job_request.settings)
    settings = job_request.settings.to_json()
    image_sha256, key = await _in_thread(_check_image, context.engine, job_request.image, settings)
    if key is not None:
        cached = await _in_thread(context.store.cache_lookup, key)
        if cached is not None and context.queue.state(cached) == protocol.DONE:
            log.info("job %s served from the cache", cached)
            return web.json_response(
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
    )
    position = await _in_thread(context.queue.submit, job)
    return web.json_response(
        {"id": job.id, "state": protocol.QUEUED, "queue_position": position, "cached": False},
        status=202,
    )


def _parse_json_request(body: bytes) -> protocol.JobRequest:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise protocol.ProtocolError("bad_json", f"the body is not valid JSON: {exc}") from None
    return protocol.parse_job_request(data)


def _check_image(
    engine: EngineBridge, image: bytes, settings: dict[str, Any]
) -> tuple[str, str | None]:
    engine.check_image(image)
    digest = hashlib.sha256(image).hexdigest()
    return digest, engine.cache_key(digest, settings)


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
    return protocol.JobRequest(
        image=parts["image"], settings=protocol.parse_settings(settings), name=name
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
    queue.touch(job_id)
    return web.json_response(queue.status(job_id))


async def job_result(request: web.Request) -> web.Response:
    """The stored result of a finished job (409 ``not_ready`` before that)."""
    context = request.app[CONTEXT]
    job_id = _job_id(request)
    context.queue.touch(job_id)
    state = context.queue.state(job_id)
    if state != protocol.DONE:
        hint = "; poll its status" if state in (protocol.QUEUED, protocol.RUNNING) else ""
        raise protocol.ProtocolError(
            "not_ready", f"job {job_id} is {state} and has no result{hint}"
        )
    body = await _in_thread(context.store.result_bytes, job_id)
    if body is None:
        raise protocol.ProtocolError("not_found", f"the result of job {job_id} is missing")
    return web.Response(body=body, content_type="application/json")


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a job; answers with its status once it has stopped (or after CANCEL_WAIT_S)."""
    queue = request.app[CONTEXT].queue
    job_id = _job_id(request)
    await _in_thread(queue.cancel, job_id, "cancelled by request")
    deadline = time.monotonic() + CANCEL_WAIT_S
    while queue.state(job_id) not in protocol.FINAL_STATES and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return web.json_response(queue.status(job_id))


# --- GET /v1/health -------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """Version, protocol, device, loaded models and queue length."""
    context = request.app[CONTEXT]
    return web.json_response(
        {
            "version": clipasso_server.__version__,
            "protocol": protocol.PROTOCOL_VERSION,
            "device": context.engine.device,
            "models_loaded": context.engine.models_loaded(),
            "queue_length": context.queue.queue_length(),
            "shutting_down": context.closing,
        }
    )


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
