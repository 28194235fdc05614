"""Finding a model's weight file: explicit directory, then standard caches, then a download.

The order is the same for every model: the directory given as a setting or ``--clip-weights``,
then ``$CLIPASSO_WEIGHTS``, then the caches other tools fill (``~/.cache/clip`` for OpenAI's
``clip`` package and open_clip's URL downloads, the Hugging Face hub cache, torch hub's
checkpoint cache), and only then a download. Nothing here loads a model; callers get a path
plus what they need to load it safely.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipasso_server.engine.errors import MissingWeightsError, UnreadableWeightsError

WEIGHTS_ENV = "CLIPASSO_WEIGHTS"

#: where a result came from, for messages and logs
ORIGIN_EXPLICIT = "weights directory"
ORIGIN_ENV = f"${WEIGHTS_ENV}"
ORIGIN_CACHE = "cache"
ORIGIN_DOWNLOAD = "download"


@dataclass(frozen=True)
class WeightFile:
    """A resolved weight file.

    ``trusted_archive`` is True only when the file matched a published SHA-256: only then may
    it be unpickled with ``weights_only=False`` (OpenAI's TorchScript archives need that).
    """

    path: Path
    origin: str
    trusted_archive: bool = False


@dataclass(frozen=True)
class WeightRequest:
    """What to look for, for one model, and how to explain its absence.

    ``file_names`` are the names accepted inside a weights directory (a name may hold a
    sub-folder, e.g. ``RN101/open_clip_model.safetensors``). ``cache_paths`` are the files the
    standard caches would hold. ``published_sha256`` maps a file name to the SHA-256 prefix its
    publisher printed; a file with that name must match it. ``download`` fetches the file and
    returns its path; it is called only when nothing local was found and downloads are allowed.
    """

    model: str
    file_names: tuple[str, ...]
    cache_paths: tuple[Path, ...] = ()
    published_sha256: dict[str, str] = field(default_factory=dict)
    download: Callable[[], Path] | None = None
    hint: str = ""


def home_cache_dir() -> Path:
    """``$XDG_CACHE_HOME`` or ``~/.cache``, read now (tests and users may change them)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else Path(os.path.expanduser("~")) / ".cache"


def clip_cache_dirs() -> list[Path]:
    """Where OpenAI's ``clip`` package and open_clip keep ``RN101.pt`` and friends.

    Both use ``~/.cache/clip`` literally; ``$XDG_CACHE_HOME/clip`` is looked at too.
    """
    dirs = [Path(os.path.expanduser("~")) / ".cache" / "clip", home_cache_dir() / "clip"]
    return list(dict.fromkeys(dirs))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, following huggingface_hub's variables, read now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    hf_home = os.environ.get("HF_HOME")
    return (Path(hf_home) if hf_home else home_cache_dir() / "huggingface") / "hub"


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """The file of ``repo_id`` in the local Hugging Face cache, without any network access."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir()))
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def downloads_disabled() -> bool:
    """True when the user told the Hugging Face tools to stay offline (``HF_HUB_OFFLINE``)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


#: how long a reachability probe may take, and how long its answer is trusted
PROBE_TIMEOUT_S = 3.0
PROBE_TTL_S = 60.0
_probe_lock = threading.Lock()
_probe_cache: dict[str, tuple[float, str | None]] = {}


def _probe(url: str, timeout: float) -> str | None:
    """None when ``url``'s server answers at all (any HTTP status), else why not."""
    request = urllib.request.Request(url, method="HEAD")
    opener = urllib.request.build_opener()  # reads the proxy settings now, not at first use
    try:
        with opener.open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered: downloads can reach it
    except urllib.error.URLError as exc:
        return str(getattr(exc.reason, "strerror", None) or exc.reason)
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def unreachable(urls: Sequence[str], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when any of ``urls`` can be reached now, else a short reason naming their hosts.

    Asked before any download so that an offline machine fails in seconds instead of
    through a download library's minute of retries. One HEAD request per URL, all in parallel
    and through the user's proxy settings, each capped at ``timeout`` (name resolution
    included); answers are remembered for a minute.
    """
    now = time.monotonic()
    answers: dict[str, str | None] = {}
    with _probe_lock:
        for url in urls:
            cached = _probe_cache.get(url)
            if cached is not None and now - cached[0] < PROBE_TTL_S:
                answers[url] = cached[1]
    pending = [url for url in urls if url not in answers]
    threads = []
    for url in pending:
        answers[url] = f"no answer within {timeout:g} s"

        def ask(url: str = url) -> None:
            answers[url] = _probe(url, timeout)

        thread = threading.Thread(target=ask, name="clipasso-probe", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = now + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with _probe_lock:
        for url in pending:
            _probe_cache[url] = (time.monotonic(), answers[url])
    if any(answers[url] is None for url in urls):
        return None
    hosts = sorted({urllib.parse.urlsplit(url).netloc for url in urls})
    reasons = sorted({str(answers[url]) for url in urls})
    return f"{' and '.join(hosts)} cannot be reached ({'; '.join(reasons)})"


@contextlib.contextmanager
def quiet_download_libraries() -> Iterator[None]:
    """Silence the download libraries' warnings and retry lines for the duration: a failed
    download is reported once, by us, with what to do about it."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "urllib3", "filelock")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def weights_dirs(weights_dir: str | Path | None) -> list[tuple[Path, str]]:
    """The explicit directories, in order: the setting or flag, then ``$CLIPASSO_WEIGHTS``."""
    dirs: list[tuple[Path, str]] = []
    if weights_dir:
        path = Path(weights_dir).expanduser()
        if not path.is_dir():
            raise MissingWeightsError(
                f"the weights directory {path} does not exist or is not a directory"
            )
        dirs.append((path, ORIGIN_EXPLICIT))
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        dirs.append((Path(env).expanduser(), ORIGIN_ENV))
    return dirs


_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256 in hex; remembered per (path, size, mtime) so it is read once."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def file_version(path: str | Path) -> str:
    """A short content version for cache keys: ``sha256:<first 12 hex>``."""
    return f"sha256:{file_sha256(path)[:12]}"


def _check_published(request: WeightRequest, path: Path) -> bool:
    """Raise when ``path`` carries a name with a published hash but other content.

    Returns True when it matched (the file is the publisher's), False when no hash applies.
    """
    expected = request.published_sha256.get(path.name)
    if not expected:
        return False
    actual = file_sha256(path)
    if actual.startswith(expected.lower()):
        return True
    raise UnreadableWeightsError(
        f"{path} does not match the SHA-256 published for {request.model}'s {path.name} "
        f"(expected {expected[:16]}..., found {actual[:16]}...): the file is damaged, "
        f"incomplete or another model's; delete or replace it"
    )


def _found(request: WeightRequest, path: Path, origin: str) -> WeightFile:
    return WeightFile(path=path, origin=origin, trusted_archive=_check_published(request, path))


def find_local(request: WeightRequest, weights_dir: str | Path | None = None) -> WeightFile | None:
    """The first local file for ``request``: explicit directories first, then the caches."""
    for directory, origin in weights_dirs(weights_dir):
        for name in request.file_names:
            candidate = directory / name
            if candidate.is_file():
                return _found(request, candidate, origin)
    for candidate in request.cache_paths:
        if candidate.is_file():
            return _found(request, candidate, ORIGIN_CACHE)
    return None


def missing_message(request: WeightRequest, weights_dir: str | Path | None, reason: str) -> str:
    """The error text: which model, which file names, where to put them, why no download."""
    where = f"the weights directory {weights_dir}" if weights_dir else "a directory"
    message = (
        f"no weights found for model {request.model}: put one of "
        f"{', '.join(request.file_names)} into {where} given with --clip-weights DIR "
        f"or named by ${WEIGHTS_ENV}"
    )
    for path in request.cache_paths:
        message += f", or {path.name} into {path.parent}"
    return f"{message}. {reason} {request.hint}".strip()


def download(request: WeightRequest) -> WeightFile:
    """Download ``request``'s file now, quietly, and check it against a published hash.

    Raises whatever the download raised (callers decide what "not available" means).
    """
    if request.download is None:
        raise MissingWeightsError(f"{request.model} is never downloaded")
    with quiet_download_libraries():
        path = Path(request.download())
    return _found(request, path, ORIGIN_DOWNLOAD)


def resolve(
    request: WeightRequest,
    weights_dir: str | Path | None = None,
    allow_download: bool = True,
) -> WeightFile:
    """The weight file for ``request``, downloading it only when nothing local exists.

    Any failure to download (offline, proxy, server error) becomes MissingWeightsError with
    the full explanation of where a file could be put by hand.
    """
    local = find_local(request, weights_dir)
    if local is not None:
        return local
    if request.download is None:
        reason = "This model is never downloaded."
    elif not allow_download:
        reason = "Downloads are switched off."
    elif downloads_disabled():
        reason = "Downloads are switched off (HF_HUB_OFFLINE is set)."
    else:
        try:
            return download(request)
        except UnreadableWeightsError:
            raise
        except Exception as exc:  # any network or server failure means "not available now"
            reason = f"The download failed ({type(exc).__name__}: {exc})."
    raise MissingWeightsError(missing_message(request, weights_dir, reason))
