"""Errors the engine raises for things a user can fix; callers show the message, not a traceback."""

from __future__ import annotations


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


class RendererUnavailableError(EngineError):
    """The renderer that was asked for cannot be used here (diffvg not installed...)."""

    code = "out_of_range"


class Cancelled(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside the optimisation loop when the caller's cancellation check says stop."""
