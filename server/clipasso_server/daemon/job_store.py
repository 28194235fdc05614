"""The daemon's memory on disk: job records, finished results and the result cache index.

Everything is written atomically (a temporary file in the same folder, fsync, ``os.replace``,
then an fsync of the folder), so a crash or a power cut leaves either the old file or the new
one, never half of one. Layout under the state dir::

    jobs/<id>.json      one record per job (state, settings, times, error, cache key)
    results/<id>.json   the protocol's result body of each finished job
    cache/<key>.json    {"id": job id} for each cache key (image bytes + settings + models)

No torch here: the store deals in plain JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")


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


def cache_key(image_sha256: str, settings: dict[str, Any], models: dict[str, str]) -> str:
    """sha256 over the image's hash, the canonical settings JSON and the model versions."""
    canonical = json.dumps(
        {"image": image_sha256, "settings": settings, "models": models},
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
        for directory in (self.jobs_dir, self.results_dir, self.cache_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- job records ------------------------------------------------------------------

    def save_record(self, record: dict[str, Any]) -> None:
        """Write one job's record (its ``id`` names the file)."""
        job_id = record["id"]
        if not protocol.is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        atomic_write(self.jobs_dir / f"{job_id}.json", _dumps(record))

    def load_records(self) -> list[dict[str, Any]]:
        """Every readable job record, oldest first; unreadable files are logged and skipped."""
        records = []
        for path in self.jobs_dir.glob("*.json"):
            if not protocol.is_job_id(path.stem):
                continue
            record = _read_json(path)
            if not isinstance(record, dict) or record.get("id") != path.stem:
                log.warning("ignoring unreadable job record %s", path)
                continue
            records.append(record)
        records.sort(key=lambda r: (r.get("created_at") or 0.0, r["id"]))
        return records

    # --- results ----------------------------------------------------------------------

    def save_result(self, job_id: str, result: dict[str, Any]) -> None:
        """Write a finished job's result body."""
        atomic_write(self.results_dir / f"{job_id}.json", _dumps(result))

    def result_bytes(self, job_id: str) -> bytes | None:
        """The stored result body as JSON bytes, or None if there is none."""
        if not protocol.is_job_id(job_id):
            return None
        try:
            return (self.results_dir / f"{job_id}.json").read_bytes()
        except FileNotFoundError:
            return None

    def has_result(self, job_id: str) -> bool:
        return protocol.is_job_id(job_id) and (self.results_dir / f"{job_id}.json").is_file()

    # --- cache ------------------------------------------------------------------------

    def cache_lookup(self, key: str) -> str | None:
        """The id of a finished job with this cache key whose result is still on disk."""
        entry = _read_json(self.cache_dir / f"{key}.json")
        job_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(job_id, str) and self.has_result(job_id):
            return job_id
        return None

    def cache_store(self, key: str, job_id: str) -> None:
        atomic_write(self.cache_dir / f"{key}.json", _dumps({"id": job_id}))

    # --- clean-up ---------------------------------------------------------------------

    def delete_job(self, job_id: str) -> None:
        """Remove a job's record and result (cache entries pointing at it go with
        :meth:`prune_cache`). The result goes first: a crash in between leaves a record
        without a result, which reads as "result missing", never the other way round."""
        if not protocol.is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        for path in (self.results_dir / f"{job_id}.json", self.jobs_dir / f"{job_id}.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def prune_cache(self) -> int:
        """Delete cache entries whose result is gone; how many were deleted."""
        removed = 0
        for path in self.cache_dir.glob("*.json"):
            entry = _read_json(path)
            job_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(job_id, str) and self.has_result(job_id):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
