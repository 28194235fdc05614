"""Errors the engine raises for things a user can fix; callers show the message, not a traceback."""

from __future__ import annotations

import re

#: a file path inside a message: POSIX, ``~/``, or Windows (``C:\\``); not a slash inside a
#: URL or a ratio (one after ``:``, ``/`` or a word character). A folder's name may hold
#: single spaces (``/home/u/My Models/x.pt``) but no colon (``clip. Download: https://``
#: is no folder); the last part ends at a space, quote, comma, semicolon or bracket, and not
#: with a full stop or colon ending the sentence.
_PATH = re.compile(
    r"""(?<![\w.:/\\~])(?:~|[A-Za-z]:)?[/\\]"""
    r"""(?:[^\s'",:;()/\\]+(?: [^\s'",:;()/\\]+)*[/\\])*"""
    r"""(?:[^\s'",;()/\\]*[^\s'",;()/\\.:])?"""
)


class EngineError(Exception):
    """A problem with the input, the settings or the set-up, explained in ``message``.

    ``code`` matches the protocol's error codes where one fits, so the daemon can pass it on.
    """

    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadImageError(EngineError):
    """The image cannot be decoded: unreadable, truncated, empty or not an image."""

    code = "bad_image"


class ImageTooLargeError(EngineError):
    """The image has more pixels than the cap (a decompression bomb, or simply too big)."""

    code = "image_too_large"


class SettingsError(EngineError):
    """A setting outside what the engine can do (unknown model name, unknown renderer...)."""

    code = "out_of_range"


class MissingWeightsError(EngineError):
    """A model's weights are neither given, nor cached, nor downloadable right now."""

    code = "missing_weights"


class UnreadableWeightsError(MissingWeightsError):
    """A weight file exists but cannot be loaded: damaged, truncated, or another model's.

    Not "missing": the user must replace that file, not look for one, so it has its own code.
    It is a MissingWeightsError all the same (no usable weights), so callers that fall back
    when weights are unavailable keep doing so.
    """

    code = "bad_weights"


class OutOfMemoryError(EngineError):
    """Loading a model or running a job needed more memory than the device had free."""

    code = "insufficient_memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for Python's MemoryError and for torch's allocation failures (CUDA's
    ``OutOfMemoryError`` and the CPU allocator's RuntimeError), told apart without torch."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def load_failure(exc: BaseException, path: object, model: str) -> EngineError:
    """The engine error for ``exc``, raised while loading the existing file ``path``: out of
    memory when it was that, else an unreadable file, naming the file and what went wrong."""
    if is_out_of_memory(exc):
        return OutOfMemoryError(
            f"out of memory while loading {path} (model {model}): free some memory or use "
            f"a device with more ({type(exc).__name__}: {exc})"
        )
    return UnreadableWeightsError(
        f"cannot load {path} as the weights of model {model}: the file is damaged, "
        f"incomplete or another model's; delete or replace it ({type(exc).__name__}: {exc})"
    )


class RendererUnavailableError(EngineError):
    """The renderer that was asked for cannot be used here (diffvg not installed...)."""

    code = "out_of_range"


class Cancelled(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside the optimisation loop when the caller's cancellation check says stop.

    ``snapshot`` is the best result so far when there is one (a partial ``SketchResult`` with
    ``stop_reason`` "cancel", from ``sketch()``), so a caller can keep the strokes computed.
    """

    def __init__(self, message: str = "cancelled", snapshot: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.snapshot = snapshot


def hide_paths(text: str) -> str:
    """``text`` with the server's file paths replaced by ``<path>``: they are not clients' to
    see. URLs are kept (a download address is how a user gets missing weights). The one rule
    for every message that leaves the daemon: refusals, job errors, crash reports."""
    return _PATH.sub("<path>", text)


def without_paths(exc: BaseException) -> str:
    """An exception's text for clients (:func:`hide_paths`); an OSError's reason alone."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return hide_paths(str(exc))


def internal_error_message(exc: BaseException) -> str:
    """What a client is told of a crash that is the daemon's fault (the traceback goes to the
    log): the exception's kind and text, without server paths, at most 500 characters."""
    return f"internal error ({type(exc).__name__}: {without_paths(exc)})"[:500]
