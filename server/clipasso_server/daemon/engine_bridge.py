"""What the daemon's HTTP process asks of the engine at submission: checks, without torch.

Submission-time checks (model names, renderer, a full decode of the image, whether the job
fits in memory) turn bad requests into 4xx answers before anything is queued, rather than into
failed jobs minutes later. They run in a thread pool, never on the event loop, and use only
the engine's torch-free modules (the model table, the image decoder, the weight finder): the
HTTP process never imports torch; the workers do.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clipasso_server
from clipasso_server.daemon import memory_check
from clipasso_server.daemon.job_store import cache_key
from clipasso_server.engine import model_specs, weight_check
from clipasso_server.engine.errors import EngineError, MissingWeightsError, SettingsError
from inkscape_clipasso import protocol

if TYPE_CHECKING:
    from PIL import Image

#: how long a submission waits for a starting worker to say which device it has
IDENTITY_WAIT_S = 60.0


class EngineBridge:
    """The engine as the HTTP side sees it: the weights folder, the image cap, the workers'
    devices and memory (``workers_info`` gives each worker's health entry)."""

    def __init__(
        self,
        weights_dir: str | Path | None,
        max_pixels: int,
        workers_info: Callable[[], list[dict[str, Any]]],
        configured_device: str = "auto",
        wait_ready: Callable[[float], bool] | None = None,
        allow_download: bool = True,
    ) -> None:
        self.weights_dir = Path(weights_dir).expanduser() if weights_dir else None
        self.allow_download = allow_download
        self.max_pixels = max_pixels
        self.workers_info = workers_info
        self.configured_device = configured_device
        self.wait_ready = wait_ready

    @property
    def device(self) -> str:
        """The workers' devices as they report them (``cuda:0,cuda:1``), or the configured
        one while none has started yet."""
        return self.device_of(self.workers_info())

    def device_of(self, workers: list[dict[str, Any]]) -> str:
        """:attr:`device` from a :meth:`workers_info` already taken (each one reads /proc)."""
        devices: list[str] = []
        for worker in workers:
            if worker.get("state") != "starting" and worker["device"] not in devices:
                devices.append(worker["device"])
        return ",".join(devices) or self.configured_device

    @staticmethod
    def models_of(workers: list[dict[str, Any]]) -> list[str]:
        """The models loaded by any of ``workers`` (a :meth:`workers_info`), as of its last
        report."""
        names: list[str] = []
        for worker in workers:
            for name in worker.get("models_loaded") or ():
                if name not in names:
                    names.append(name)
        return names

    def check_settings(self, settings: protocol.SketchSettings) -> None:
        """ProtocolError ``out_of_range`` for model names or a renderer this engine lacks."""
        try:
            model_specs.model_spec(settings.loss_model, model_specs.RESNET)
            model_specs.model_spec(settings.saliency_model, model_specs.VIT)
        except SettingsError as exc:
            raise protocol.ProtocolError("out_of_range", exc.message) from None
        if settings.renderer == "diffvg" and importlib.util.find_spec("pydiffvg") is None:
            raise protocol.ProtocolError(
                "out_of_range", "renderer 'diffvg' is not installed here; use 'auto' or 'torch'"
            )

    def missing_weights(self, names: list[str]) -> str | None:
        """What a job loading the models ``names`` could not get now (every one at once, with
        file names, folders and download addresses), or None when all are there or can be
        downloaded. Loads and downloads nothing."""
        try:
            missing = weight_check.find_missing(names, self.weights_dir, self.allow_download)
        except MissingWeightsError as exc:  # the weights folder itself is missing
            return exc.message
        return weight_check.missing_message(missing) if missing else None

    def check_weights(self, settings: protocol.SketchSettings) -> None:
        """ProtocolError ``missing_weights`` (503) when the job's weights cannot be had: the
        job would only fail in the worker, and with downloads allowed retry them every time."""
        message = self.missing_weights(weight_check.job_models(settings))
        if message is not None:
            raise protocol.ProtocolError("missing_weights", message)

    def check_memory(self, settings: protocol.SketchSettings) -> None:
        """ProtocolError ``insufficient_memory`` when no worker's device has room for the job."""
        memory_check.check_fits(settings, self.workers_info())

    def check_image(self, data: bytes) -> Image.Image:
        """Decode the image fully (so truncated files are caught), at the engine's working
        size; the decoded copy (the thumbnail is made from it, not from a second decode)."""
        from clipasso_server.engine.image_decode import decode_image

        try:
            return decode_image(data, max_pixels=self.max_pixels)
        except EngineError as exc:
            raise protocol.ProtocolError(exc.code, exc.message) from None

    def cache_key(self, image_sha256: str, settings: dict[str, Any]) -> str | None:
        """The key a finished identical job was cached under; None if a model is not on disk
        (never downloads: a client must not wait for that at submission). A stored record's
        settings may lack a model (damage, an older version): None, a mismatch, not a crash."""
        loss, saliency = settings.get("loss_model"), settings.get("saliency_model")
        if not isinstance(loss, str) or not isinstance(saliency, str):
            return None
        try:
            models = {
                "loss": model_specs.describe_local(loss, self.weights_dir),
                "saliency": model_specs.describe_local(saliency, self.weights_dir),
            }
        except (EngineError, MissingWeightsError, SettingsError, OSError):
            return None
        return cache_key(image_sha256, settings, models, self.engine_identity(settings))

    def engine_identity(self, settings: dict[str, Any]) -> dict[str, str]:
        """What besides the settings and models decides a result: the engine's version, the
        kind of device (``cpu``, ``cuda``: their arithmetic differs) and the renderer that
        ``auto`` resolves to here."""
        if self.wait_ready is not None:
            # the device a worker reports ("auto" resolved), not the configured one: a job
            # submitted while the workers start must get the same key as one submitted later
            self.wait_ready(IDENTITY_WAIT_S)
        kinds = sorted({d.split(":")[0] for d in self.device.split(",") if d})
        renderer = settings.get("renderer", "auto")
        if renderer == "auto":
            renderer = "diffvg" if importlib.util.find_spec("pydiffvg") is not None else "torch"
        return {
            "version": clipasso_server.__version__,
            "device": ",".join(kinds),
            "renderer": str(renderer),
        }
