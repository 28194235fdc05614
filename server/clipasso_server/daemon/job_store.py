"""The daemon's memory on disk: job records, finished results and the result cache index.

Everything is written atomically (a temporary file in the same folder, fsync, ``os.replace``,
then an fsync of the folder), so a crash or a power cut leaves either the old file or the new
one, never half of one. Layout under the state dir::

    jobs/<id>.json      one record per job (state, settings, times, error, cache key)
    results/<id>.json   the protocol's result body of each finished job
    cache/<key>.json    {"id": job id} for each cache key (image bytes + settings + models)
    thumbnails/<id>.jpg a small copy of each job's photo, for the web page

No torch here: the store deals in plain JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipasso_server.daemon.job import schedule_notes
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

#: a job record's fields that must be there, and the JSON types each may have (None: null)
_RECORD_FIELDS: dict[str, tuple[type | None, ...]] = {
    "id": (str,),
    "settings": (dict,),
    "created_at": (int, float),
    "state": (str,),
}
_OPTIONAL_FIELDS: dict[str, tuple[type | None, ...]] = {
    "name": (str,),
    "image_sha256": (str,),
    "started_at": (int, float, None),
    "finished_at": (int, float, None),
    "step": (int,),
    "total": (int,),
    "best_loss": (dict,),
    "error": (dict, None),
    "reason": (str, None),
    "step_time_s": (int, float, None),
    "schedule_notes": (list,),
}


#: the largest store file of each kind that is read back; anything bigger is damage (a 1 GB
#: sparse result was once read whole into memory)
MAX_RECORD_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 64 * 1024 * 1024
MAX_THUMBNAIL_BYTES = 4 * 1024 * 1024
MAX_CACHE_ENTRY_BYTES = 4096
_OPEN_FLAGS = os.O_RDONLY | sum(
    getattr(os, name, 0) for name in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC")
)  # not every system has each (Windows has none of them)


class StoreFileError(Exception):
    """A store file that is not a regular file of a sane size (a FIFO, a folder, a symlink,
    a huge sparse file): damage, never read. The message names no path."""


def read_store_file(path: Path, limit: int) -> bytes | None:
    """The bytes of the store file ``path``, None when there is none.

    Opened without following a symlink and without blocking (a FIFO would hang the reading
    thread for ever, and with it start-up or shutdown), then checked to be a regular file of
    at most ``limit`` bytes; StoreFileError otherwise, and for any error reading it.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink; ENXIO: a socket; EACCES...
        raise StoreFileError(f"it cannot be opened as a plain file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreFileError("it is not a regular file")
        if info.st_size > limit:
            raise StoreFileError(f"it is {info.st_size:,} bytes, more than the {limit:,} allowed")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total) or 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise StoreFileError(f"it grew past the {limit:,} bytes allowed")
        return b"".join(chunks)
    except OSError as exc:
        raise StoreFileError(f"it cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)


def remove_damaged(path: Path) -> None:
    """Delete a damaged store file; one that cannot be unlinked (a folder) is renamed aside to
    ``<name>.bad`` so that it is never looked at again."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError:
        try:
            os.replace(path, path.with_name(path.name + ".bad"))
        except OSError as exc:
            log.warning("cannot remove the damaged store file %s: %s", path, exc.strerror)


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` itself (not what a symlink names) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class DamagedResultError(Exception):
    """A stored result that is not whole (cut short by a full disk, edited, bit rot).

    ``message`` is for clients: it names the job, never a server path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def record_problem(record: Any, job_id: str) -> str | None:
    """What is wrong with a job record read from ``<job_id>.json``, or None if it is sound.

    Only the fields the daemon reads are checked; fields it does not know are left alone
    (a newer daemon may have written them).
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("id") != job_id:
        return f"its id {record.get('id')!r} does not match the file name"
    for name, types in (*_RECORD_FIELDS.items(), *_OPTIONAL_FIELDS.items()):
        if name not in record:
            if name in _RECORD_FIELDS:
                return f"{name} is missing"
            continue
        problem = _type_problem(record[name], types)
        if problem:
            return f"{name} {problem}"
    if record["state"] not in protocol.JOB_STATES:
        return f"state {record['state']!r} is not a job state"
    for name in ("step", "total"):
        if record.get(name, 0) < 0:
            return f"{name} is negative"
    for level, loss in (record.get("best_loss") or {}).items():
        if not str(level).isdigit() or _type_problem(loss, (int, float)):
            return f"best_loss has a bad entry {level!r}"
    error = record.get("error")
    if error is not None and not all(isinstance(error.get(k), str) for k in ("error", "message")):
        return "error is not {error, message}"
    try:
        protocol.parse_settings(record["settings"])
    except protocol.ProtocolError as exc:
        return f"its settings are not valid ({exc.message})"
    return None


def _type_problem(value: Any, types: tuple[type | None, ...]) -> str | None:
    if value is None:
        return None if None in types else "is null"
    if isinstance(value, bool) or not isinstance(value, tuple(t for t in types if t)):
        return f"has the wrong type ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"is not a finite number ({value})"
    return None


def json_safe(data: Any) -> Any:
    """``data`` with every NaN and infinity replaced by None (JSON has neither)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/clipasso``, or ``~/.local/state/clipasso`` when that is unset."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "clipasso"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new, never a mix."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the folder's entry is on disk (POSIX only).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cache_key(
    image_sha256: str,
    settings: dict[str, Any],
    models: dict[str, str],
    engine: dict[str, str] | None = None,
) -> str:
    """sha256 over the image's hash, the canonical settings JSON (every setting: a changed
    width, colour or time budget is another sketch), the model versions and ``engine`` (its
    version, device kind and resolved renderer), so an upgrade never serves old results."""
    canonical = json.dumps(
        {"image": image_sha256, "settings": settings, "models": models, "engine": engine or {}},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class JobStore:
    """Reads and writes job records, results and cache entries under ``state_dir``."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir).expanduser()
        self.jobs_dir = self.root / "jobs"
        self.results_dir = self.root / "results"
        self.cache_dir = self.root / "cache"
        self.thumbnails_dir = self.root / "thumbnails"
        #: the best strokes so far of unfinished jobs, apart from results: a result file is
        #: always a finished job's, whatever happened to the disk in between
        self.partials_dir = self.root / "partials"
        for directory in (
            self.jobs_dir,
            self.results_dir,
            self.partials_dir,
            self.cache_dir,
            self.thumbnails_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- job records ------------------------------------------------------------------

    def save_record(self, record: dict[str, Any]) -> None:
        """Write one job's record (its ``id`` names the file)."""
        job_id = record["id"]
        if not protocol.is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        atomic_write(self.jobs_dir / f"{job_id}.json", _dumps(record))

    def load_records(self) -> list[dict[str, Any]]:
        """Every sound job record, oldest first.

        A record that cannot be read or fails :func:`record_problem` is renamed aside to
        ``<id>.json.bad`` (kept for a person to look at, never read again) and logged once, so
        one damaged file never stops the daemon from starting. A finished job whose record
        was lost but whose result is intact gets a record rebuilt from the result, so it is
        served again; files no record owns (results, partials, thumbnails, cache entries) are
        deleted.
        """
        records = []
        for path in self.jobs_dir.glob("*.json"):
            if not protocol.is_job_id(path.stem):
                continue
            try:
                record = _read_json(path, MAX_RECORD_BYTES)
            except StoreFileError as exc:
                record, problem = None, str(exc)
            else:
                problem = (
                    "it is not valid JSON" if record is None else record_problem(record, path.stem)
                )
            if problem is not None:
                self._set_aside(path, problem)
                continue
            records.append(record)
        known = {record["id"] for record in records}
        for record in self._rebuilt_records(known):
            records.append(record)
            known.add(record["id"])
        self._prune_orphans(known)
        records.sort(key=lambda r: (r["created_at"], r["id"]))
        return records

    def _rebuilt_records(self, known: set[str]) -> list[dict[str, Any]]:
        """Records for the intact results no sound record owns (the record was damaged and
        set aside, or lost): a finished job is all a result can tell of. Whatever the set-aside
        record still says of the job's name, image and times is kept."""
        rebuilt = []
        for path in self.results_dir.glob("*.json"):
            job_id = path.stem
            if not protocol.is_job_id(job_id) or job_id in known:
                continue
            try:
                body = self._checked_body(self.results_dir, job_id)  # drops a damaged one
            except DamagedResultError:
                continue
            if body is None:
                continue
            record = self._record_from_result(job_id, json.loads(body), path)
            if record_problem(record, job_id) is not None:
                continue  # settings this daemon cannot read: pruned as an orphan below
            try:
                self.save_record(record)
            except OSError as exc:
                log.warning("cannot save the rebuilt record of job %s: %s", job_id, exc.strerror)
            log.warning("rebuilt the record of job %s from its intact result", job_id)
            rebuilt.append(record)
        return rebuilt

    def _record_from_result(self, job_id: str, result: dict[str, Any], path: Path) -> dict:
        try:
            finished = os.lstat(path).st_mtime
        except OSError:
            finished = 0.0
        try:
            old = _read_json(self.jobs_dir / f"{job_id}.json.bad", MAX_RECORD_BYTES)
        except StoreFileError:
            old = None
        old = old if isinstance(old, dict) else {}
        settings = result.get("settings") or {}
        iterations = settings.get("iterations") if isinstance(settings, dict) else None
        record: dict[str, Any] = {
            "id": job_id,
            "name": "",
            "settings": settings,
            "image_sha256": "",
            "created_at": finished,
            "state": protocol.DONE,
            "started_at": None,
            "finished_at": finished,
            "step": result.get("steps_run", iterations or 0),
            "total": iterations or 0,
            "best_loss": {},
            "error": None,
            "reason": None,
            "step_time_s": None,
            # a job its time budget stopped early must not look like one that ran out
            "stop_reason": (
                result.get("stop_reason")
                if result.get("stop_reason") in protocol.STOP_REASONS
                else None
            ),
            "schedule_notes": list(schedule_notes(result.get("schedule_notes"))),
        }
        for name in ("name", "image_sha256", "created_at", "started_at"):
            value = old.get(name)
            types = _OPTIONAL_FIELDS.get(name, (int, float))
            if value is not None and _type_problem(value, types) is None:
                record[name] = value
        return record

    def _prune_orphans(self, known: set[str]) -> None:
        """Delete results, partials and thumbnails of jobs that have no record, then the cache
        entries whose result is gone: never served, they would only fill the disk."""
        for directory, suffix in (
            (self.results_dir, ".json"),
            (self.partials_dir, ".json"),
            (self.thumbnails_dir, ".jpg"),
        ):
            for path in directory.glob(f"*{suffix}"):
                if protocol.is_job_id(path.stem) and path.stem not in known:
                    log.info("deleting %s: no job record owns it", path.relative_to(self.root))
                    remove_damaged(path)
        self.prune_cache()

    def _set_aside(self, path: Path, problem: str) -> None:
        aside = path.with_name(path.name + ".bad")
        try:
            os.replace(path, aside)
        except OSError as exc:
            log.warning(
                "ignoring the damaged job record %s (%s); cannot rename it: %s", path, problem, exc
            )
            return
        log.warning("set aside the damaged job record %s as %s: %s", path, aside.name, problem)

    # --- results ----------------------------------------------------------------------

    def save_result(self, job_id: str, result: dict[str, Any] | bytes) -> None:
        """Write a finished job's result body (a dict, or the JSON bytes of one)."""
        data = result if isinstance(result, bytes) else result_json(result)
        atomic_write(self.results_dir / f"{job_id}.json", data)

    def result_bytes(self, job_id: str) -> bytes | None:
        """The stored result body as JSON bytes, or None if there is none.

        The body is parsed and checked against the protocol first: a damaged one is deleted
        (with the cache entries pointing at it) and DamagedResultError raised, so it is never
        served and an identical request runs again.
        """
        try:
            return self._checked_body(self.results_dir, job_id)
        except DamagedResultError:
            self.prune_cache()
            raise

    def save_partial(self, job_id: str, result: dict[str, Any]) -> None:
        """Write an unfinished job's best strokes so far (a result body marked partial)."""
        atomic_write(self.partials_dir / f"{job_id}.json", result_json(result))

    def partial_bytes(self, job_id: str) -> bytes | None:
        """The stored best strokes so far as JSON bytes, None if there are none; checked like
        :meth:`result_bytes` (DamagedResultError for a damaged one, which is deleted; no cache
        entry ever points at an unfinished job)."""
        return self._checked_body(self.partials_dir, job_id)

    def drop_partial(self, job_id: str) -> None:
        """Forget the best strokes so far (the job finished: its result replaces them)."""
        if protocol.is_job_id(job_id):
            with contextlib.suppress(FileNotFoundError):
                (self.partials_dir / f"{job_id}.json").unlink()

    def _checked_body(self, directory: Path, job_id: str) -> bytes | None:
        """``directory/<job_id>.json`` once parsed and checked as a result body; None when
        there is none; a damaged one is deleted and DamagedResultError raised."""
        if not protocol.is_job_id(job_id):
            return None
        path = directory / f"{job_id}.json"
        try:
            body = read_store_file(path, MAX_RESULT_BYTES)
            if body is None:
                return None
            result = json.loads(body, parse_constant=_refuse_constant)
            protocol.validate_result(result)
            if result.get("id") != job_id:
                raise ValueError("it belongs to another job")
        except (ValueError, RecursionError, StoreFileError) as exc:  # ProtocolError: ValueError
            problem = exc.message if isinstance(exc, protocol.ProtocolError) else str(exc)
            log.warning("dropping the damaged result %s: %s", path, problem[:200])
            remove_damaged(path)
            raise DamagedResultError(
                f"its stored result was damaged ({problem[:120]}) and has been deleted; "
                "submit the job again"
            ) from None
        return body

    def check_result(self, job_id: str) -> None:
        """Raise DamagedResultError (and drop the file) unless the stored result is whole."""
        self.result_bytes(job_id)

    def has_result(self, job_id: str) -> bool:
        return protocol.is_job_id(job_id) and is_regular_file(self.results_dir / f"{job_id}.json")

    # --- thumbnails -------------------------------------------------------------------

    def save_thumbnail(self, job_id: str, jpeg: bytes) -> None:
        """Keep a job's thumbnail (JPEG bytes) for as long as the job."""
        if not protocol.is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        atomic_write(self.thumbnails_dir / f"{job_id}.jpg", jpeg)

    def thumbnail_bytes(self, job_id: str) -> bytes | None:
        """A job's thumbnail, or None if it has none."""
        if not protocol.is_job_id(job_id):
            return None
        path = self.thumbnails_dir / f"{job_id}.jpg"
        try:
            return read_store_file(path, MAX_THUMBNAIL_BYTES)
        except StoreFileError as exc:
            log.warning("dropping the damaged thumbnail %s: %s", path, exc)
            remove_damaged(path)
            return None

    # --- cache ------------------------------------------------------------------------

    def load_record(self, job_id: str) -> dict[str, Any] | None:
        """One job's sound record from disk, or None."""
        if not protocol.is_job_id(job_id):
            return None
        try:
            record = _read_json(self.jobs_dir / f"{job_id}.json", MAX_RECORD_BYTES)
        except StoreFileError:
            return None
        return record if record_problem(record, job_id) is None else None

    def cache_lookup(
        self, key: str, key_of: Callable[[dict[str, Any]], str | None] | None = None
    ) -> str | None:
        """The id of a finished job with this cache key whose result is still on disk.

        With ``key_of`` (a job record -> the key its image and settings give now), the entry's
        job must give this very key: an entry naming another job (edited, or damaged) would
        serve that job's sketch for this request; such an entry is deleted.
        """
        path = self.cache_dir / f"{key}.json"
        entry = _read_cache_entry(path)
        job_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(job_id, str) or not self.has_result(job_id):
            return None
        if key_of is not None:
            record = self.load_record(job_id)
            if record is None or key_of(record) != key:
                log.warning(
                    "dropping the cache entry %s: it names job %s of another request",
                    path.name,
                    job_id,
                )
                remove_damaged(path)
                return None
        return job_id

    def cache_store(self, key: str, job_id: str) -> None:
        atomic_write(self.cache_dir / f"{key}.json", _dumps({"id": job_id}))

    # --- clean-up ---------------------------------------------------------------------

    def delete_job(self, job_id: str) -> None:
        """Remove a job's record and result (cache entries pointing at it go with
        :meth:`prune_cache`). The result goes first: a crash in between leaves a record
        without a result, which reads as "result missing", never the other way round."""
        if not protocol.is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        for path in (
            self.results_dir / f"{job_id}.json",
            self.partials_dir / f"{job_id}.json",
            self.thumbnails_dir / f"{job_id}.jpg",
            self.jobs_dir / f"{job_id}.json",
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def prune_cache(self) -> int:
        """Delete cache entries whose result is gone; how many were deleted."""
        removed = 0
        for path in self.cache_dir.glob("*.json"):
            entry = _read_cache_entry(path)
            job_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(job_id, str) and self.has_result(job_id):
                continue
            remove_damaged(path)
            removed += 1
        return removed


def result_json(result: dict[str, Any]) -> bytes:
    """A result body as the JSON bytes that are stored and served (NaN sent as null)."""
    return _dumps(json_safe(result))


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_json(path: Path, limit: int) -> Any:
    """A store file's JSON; None when it is missing or not JSON; StoreFileError when it is
    not a regular file of at most ``limit`` bytes."""
    data = read_store_file(path, limit)
    if data is None:
        return None
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _read_cache_entry(path: Path) -> Any:
    try:
        return _read_json(path, MAX_CACHE_ENTRY_BYTES)
    except StoreFileError:
        return None
