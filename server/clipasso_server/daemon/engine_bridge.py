"""What the daemon asks of the engine: checks at submission time, and running one job.

Submission-time checks (model names, renderer, a full decode of the image) turn bad requests
into 4xx answers before anything is queued, rather than into failed jobs minutes later. They
run in a thread pool, never on the event loop.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from clipasso_server.daemon.job_queue import Job
from clipasso_server.daemon.job_store import cache_key
from clipasso_server.engine import clip_models
from clipasso_server.engine.errors import EngineError, MissingWeightsError, SettingsError
from clipasso_server.engine.types import Progress, SketchConfig
from inkscape_clipasso import protocol


class EngineBridge:
    """The engine as the daemon sees it: one ModelStore kept for the daemon's lifetime.

    ``probe`` is a second store that never downloads: it gives the model versions for the
    cache key at submission time without ever making a client wait for a download (a model
    that is not on disk yet simply means no cache lookup).
    """

    def __init__(self, models: clip_models.ModelStore, max_pixels: int) -> None:
        self.models = models
        self.max_pixels = max_pixels
        self.probe = clip_models.ModelStore(
            device="cpu", weights_dir=models.weights_dir, allow_download=False
        )
        self._loaded: tuple[str, ...] = tuple(models.loaded())

    @property
    def device(self) -> str:
        return str(self.models.device)

    def models_loaded(self) -> list[str]:
        """The models loaded so far, as of the last job (the store's lock is held while a
        model loads, and a health check must never wait for that)."""
        return list(self._loaded)

    def check_settings(self, settings: protocol.SketchSettings) -> None:
        """ProtocolError ``out_of_range`` for model names or a renderer this engine lacks."""
        try:
            clip_models.model_spec(settings.loss_model, clip_models.RESNET)
            clip_models.model_spec(settings.saliency_model, clip_models.VIT)
        except SettingsError as exc:
            raise protocol.ProtocolError("out_of_range", exc.message) from None
        if settings.renderer == "diffvg" and importlib.util.find_spec("pydiffvg") is None:
            raise protocol.ProtocolError(
                "out_of_range", "renderer 'diffvg' is not installed here; use 'auto' or 'torch'"
            )

    def check_image(self, data: bytes) -> tuple[int, int]:
        """Decode the image fully (so truncated files are caught); its size in pixels."""
        from clipasso_server.engine.image_input import decode_image

        try:
            image = decode_image(data, max_pixels=self.max_pixels)
        except EngineError as exc:
            raise protocol.ProtocolError(exc.code, exc.message) from None
        return image.size

    def cache_key(self, image_sha256: str, settings: dict[str, Any]) -> str | None:
        """The key a finished identical job was cached under; None if a model is not on disk."""
        try:
            models = {
                "loss": self.probe.describe(settings["loss_model"]),
                "saliency": self.probe.describe(settings["saliency_model"]),
            }
        except (MissingWeightsError, SettingsError, OSError):
            return None
        return cache_key(image_sha256, settings, models)

    def run(
        self,
        job: Job,
        progress: Callable[[Progress], None],
        should_stop: Callable[[], bool],
    ) -> dict[str, Any]:
        """Run one job on the engine; the protocol's result body without ``id``."""
        from clipasso_server.engine.image_input import decode_image
        from clipasso_server.engine.sketcher import sketch
        from clipasso_server.engine.svg_output import result_to_svg

        if job.image is None:
            raise EngineError("the job's image is gone")
        image = decode_image(job.image, max_pixels=self.max_pixels)
        config = SketchConfig(**job.settings)
        try:
            result = sketch(image, config, self.models, progress=progress, should_stop=should_stop)
        finally:
            self._loaded = tuple(self.models.loaded())
        body = result.to_json()
        body["svg"] = result_to_svg(result)
        return body
