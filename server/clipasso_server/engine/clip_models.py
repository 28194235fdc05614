"""CLIP visual towers through open_clip: the loss model, the saliency model, and their store.

User-facing names (``RN101``, ``ViT-B-32``, ...) map to open_clip's QuickGELU configs, because
OpenAI's weights were trained with QuickGELU and the plain configs silently give other outputs.
Only the visual tower is kept; it is frozen and in eval mode, so a backward pass computes
gradients for the input images only. Two tiny random models (``test-tiny-rn``,
``test-tiny-vit``) share the real architectures and the real loading path, for tests and
smoke checks; ``write_test_weights`` writes their files.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipasso_server.engine import weight_check, weights
from clipasso_server.engine.batchnorm_folding import fold_batch_norms
from clipasso_server.engine.device import pick_device
from clipasso_server.engine.errors import (
    EngineError,
    OutOfMemoryError,
    SettingsError,
    is_out_of_memory,
    load_failure,
)
from clipasso_server.engine.model_specs import (  # noqa: F401 (re-exported)
    _SPECS,
    RESNET,
    TEST_LOSS_MODEL,
    TEST_MODELS,
    TEST_SALIENCY_MODEL,
    VIT,
    ModelSpec,
    known_models,
    model_spec,
)

TEST_WEIGHTS_SEED = 20220501

#: CLIP's image normalisation (OpenAI's dataset statistics)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_CONFIG_DIR = Path(__file__).parent / "model_configs"


_config_lock = threading.Lock()
_configs_registered = False


def _register_test_configs() -> None:
    """Tell open_clip about the tiny models' configs (once per process)."""
    global _configs_registered
    with _config_lock:
        if not _configs_registered:
            import open_clip

            open_clip.add_model_config(_CONFIG_DIR)
            _configs_registered = True


def load_visual(spec: ModelSpec, weight_file: weights.WeightFile) -> nn.Module:
    """Build ``spec``'s open_clip model from ``weight_file`` and keep its visual tower, frozen.

    TorchScript archives (OpenAI's ``.pt``) are only unpickled when their hash matched the
    published one (``trusted_archive``); every other file is loaded with ``weights_only``.
    A failure says what failed: out of memory, or a file that is not these weights
    (UnreadableWeightsError), never "missing".
    """
    import open_clip

    _register_test_configs()
    try:
        model = open_clip.create_model(
            spec.arch,
            pretrained=str(weight_file.path),
            weights_only=not weight_file.trusted_archive,
            device="cpu",
        )
    except Exception as exc:
        raise load_failure(exc, weight_file.path, spec.name) from exc
    visual = model.visual
    del model
    visual.eval()
    visual.requires_grad_(False)
    return visual


def _normalise(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    # (images - mean) / std as one multiply-add: forward and backward ~25 % faster on the CPU
    return torch.addcmul(-mean / std, images, 1.0 / std)


def _check_images(images: Tensor, size: int, who: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{who} expects images [B,3,{size},{size}], got {list(images.shape)}")


class LossModel:
    """A frozen ModifiedResNet visual tower giving the geometric and semantic features.

    ``features`` returns the layer2 and layer3 feature maps (the reference's geometric loss
    layers; for RN101 [B,512,28,28] and [B,1024,14,14]) and the attention-pooled embedding
    (not L2-normalised; RN101: [B,512]). On CUDA with bf16 support the forward runs under bf16
    autocast with channels-last weights; outputs are returned in the weights' dtype (float32;
    float64 when ``visual`` was made so, as the equivalence tests do). The model
    takes ``visual`` over: its batch norms are folded into the convolutions, in place.
    """

    def __init__(
        self,
        name: str,
        version: str,
        visual: nn.Module,
        device: torch.device,
        precision: str = "auto",
        compile_mode: str | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.device = device
        self.input_size = int(visual.image_size)
        self.embed_dim = int(visual.output_dim)
        self._autocast_dtype = _autocast_dtype(device, precision)
        self._compile_mode = compile_mode
        self._by_precision: dict[str, LossModel] = {}
        # channels-last convolutions are faster with both cuDNN and oneDNN (CPU: ~30 % here)
        self._channels_last = device.type in ("cuda", "cpu")
        visual.eval()
        fold_batch_norms(visual)
        visual = visual.to(device)
        if self._channels_last:
            visual = visual.to(memory_format=torch.channels_last)
        self.visual = visual
        #: the weights' dtype: float32, or float64 for the tests' exact comparisons
        self.dtype = next(visual.parameters()).dtype
        self._mean = torch.tensor(CLIP_MEAN, device=device, dtype=self.dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=device, dtype=self.dtype).view(1, 3, 1, 1)
        self._pool = ClassTokenPool(visual.attnpool)
        #: True: open_clip's own attention pool (the pre-#22 path, for paired benches)
        self.legacy_pool = False
        self._trunk = _compiled(self._layers, compile_mode)

    @property
    def arithmetic(self) -> str:
        """What the forward computes in: "bf16 autocast" or the weights' dtype ("float32")."""
        if self._autocast_dtype is not None:
            return f"{str(self._autocast_dtype).removeprefix('torch.')} autocast"
        return str(self.dtype).removeprefix("torch.")

    def in_precision(self, precision: str) -> LossModel:
        """This model computing in a job's ``precision`` ("auto": as it was made), sharing
        its weights: one loaded model serves jobs that ask for different arithmetic."""
        dtype = (
            self._autocast_dtype if precision == "auto" else _autocast_dtype(self.device, precision)
        )
        if dtype == self._autocast_dtype:
            return self
        if precision not in self._by_precision:
            other = copy.copy(self)
            other._autocast_dtype = dtype
            other._by_precision = {}
            other._trunk = _compiled(other._layers, self._compile_mode)
            self._by_precision[precision] = other
        return self._by_precision[precision]

    def features(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """images [B,3,224,224] RGB in [0,1] -> ([layer2, layer3], pooled embedding [B,D]).

        Gradients flow to ``images`` (the weights are frozen).
        """
        _check_images(images, self.input_size, f"loss model {self.name}")
        x = _normalise(images.to(self.device, self.dtype), self._mean, self._std)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        layer2, layer3, embedding = self._trunk(x, self.legacy_pool)
        return [layer2.to(self.dtype), layer3.to(self.dtype)], embedding.to(self.dtype)

    def _layers(self, x: Tensor, legacy_pool: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised images -> layer2, layer3 and the embedding (what may be compiled)."""
        v = self.visual
        context = (
            torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)
            if self._autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with context:
            x = v.layer1(v.stem(x))
            layer2 = v.layer2(x)
            layer3 = v.layer3(layer2)
            pool = v.attnpool if legacy_pool else self._pool
            return layer2, layer3, pool(v.layer4(layer3))


#: ``torch.compile`` modes a loss model may be compiled with ("reduce-overhead": CUDA graphs)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _compiled(function, mode: str | None):
    """``function`` compiled with ``torch.compile`` in ``mode`` (None: as it is). Fixed shapes
    (``dynamic=False``): the loop's chunks all have one size but the last."""
    if mode is None:
        return function
    if mode not in COMPILE_MODES:
        raise SettingsError(
            f"unknown compile mode {mode!r}: use one of {', '.join(COMPILE_MODES)} (or none)"
        )
    return torch.compile(function, mode=mode, dynamic=False)


class ClassTokenPool(nn.Module):
    """open_clip's ``AttentionPool2d`` computed for the one token it returns, with the same
    weights and (up to float rounding) the same output and gradient.

    open_clip projects all HW+1 tokens to queries, attends with every one of them and
    projects every output, then keeps token 0 (the mean token): for RN101 three quarters of
    the pool's matmuls, forward and backward, are thrown away. Here only the mean token is a
    query. The keys and values of the HW spatial tokens are one 1x1 convolution of the
    feature map (oneDNN's convolution, not MKL's sgemm, which is half as fast on AMD CPUs),
    and the positional embedding's share of them, ``W (x + pos) + b = W x + (W pos + b)``, is
    a constant made once; the mean token's key and value are the mean of the spatial ones
    plus its own constant, as the projection is linear.
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.heads = int(pool.num_heads)
        weight_q, bias_q = pool.q_proj.weight, pool.q_proj.bias
        weight_kv = torch.cat([pool.k_proj.weight, pool.v_proj.weight])  # [2C, C]
        bias_kv = torch.cat([pool.k_proj.bias, pool.v_proj.bias])
        position = pool.positional_embedding.detach()  # [HW+1, C]
        with torch.no_grad():
            # [HW+1, 2C]: what position and bias add to each token's key and value
            self.register_buffer("kv_constant", F.linear(position, weight_kv, bias_kv))
            self.register_buffer("position_mean", position[:1].clone())
        self.register_buffer("weight_kv", weight_kv.detach()[:, :, None, None])
        self.register_buffer("weight_q", weight_q.detach())
        self.register_buffer("bias_q", bias_q.detach())
        self.register_buffer("weight_out", pool.c_proj.weight.detach())
        self.register_buffer("bias_out", pool.c_proj.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        """x [N,C,H,W] -> [N,D]: the attention-pooled embedding."""
        batch, channels = int(x.shape[0]), int(x.shape[1])
        heads, width = self.heads, channels // self.heads
        weight_kv = self.weight_kv.to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):
            weight_kv = weight_kv.contiguous(memory_format=torch.channels_last)
        spatial = F.conv2d(x, weight_kv).flatten(2)  # [N, 2C, HW]
        mean_token = x.mean(dim=(2, 3))  # [N, C]
        constant = self.kv_constant.to(spatial.dtype)
        tokens = torch.cat([spatial.mean(dim=2, keepdim=True), spatial], dim=2)
        tokens = tokens + constant.t()[None]  # [N, 2C, HW+1]
        keys, values = tokens.view(batch, 2, heads, width, -1).unbind(1)  # [N, h, w, HW+1]
        query = F.linear(mean_token + self.position_mean.to(x.dtype), self.weight_q, self.bias_q)
        query = query.view(batch, heads, 1, width) * width**-0.5
        attention = torch.softmax(query @ keys, dim=-1)  # [N, h, 1, HW+1]
        pooled = (attention @ values.transpose(-2, -1)).reshape(batch, channels)
        return F.linear(pooled, self.weight_out, self.bias_out)


#: the loss model's arithmetic a job may ask for (the protocol's PRECISIONS)
PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    """A SettingsError in one line for a precision that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast
    halves a step's arithmetic time; elsewhere oneDNN converts to float32 and gains nothing.
    torch has no public call for it; its private ones are used where they exist."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision``: "auto" is bf16 on CUDA GPUs that support it and
    on CPUs that compute bf16 natively (bench/precision.py: half the CPU time, the loss of
    the sketch kept within 1 %), float32 elsewhere;
    "bf16" asks for it on any device (the CPU too: tests run the mixed-precision path there
    with ``--dtype bfloat16``); None: the weights' own dtype."""
    check_precision(precision)
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_computes_bf16():
        return torch.bfloat16
    return None


class SaliencyModel:
    """A frozen ViT visual tower whose class-token attention gives the saliency map."""

    def __init__(self, name: str, version: str, visual: nn.Module, device: torch.device) -> None:
        self.name = name
        self.version = version
        self.device = device
        self.input_size = int(visual.image_size[0])
        self.grid_size = int(visual.grid_size[0])
        self.visual = visual.to(device)
        self._blocks = list(visual.transformer.resblocks)
        for block in self._blocks:
            if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
                raise SettingsError(f"{name}: its attention blocks are not supported")
        self._batch_first = bool(getattr(visual.transformer, "batch_first", True))
        self._mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def cls_attention(self, images: Tensor) -> Tensor:
        """images [B,3,224,224] in [0,1] -> [B,g,g]: class-token attention to the patches.

        Averaged over heads and over all blocks. Each row is the class token's softmax
        restricted to the patch tokens, so a map sums to less than 1 (the rest is the class
        token attending to itself). open_clip runs attention with ``need_weights=False``, so
        the weights are recomputed here from each block's ``ln_1`` output (captured by hooks)
        and its ``in_proj`` query/key projections.
        """
        _check_images(images, self.input_size, f"saliency model {self.name}")
        x = _normalise(images.to(self.device, torch.float32), self._mean, self._std)
        captured: list[Tensor] = []
        hooks = [
            block.ln_1.register_forward_hook(lambda _m, _i, out: captured.append(out))
            for block in self._blocks
        ]
        try:
            self.visual(x)
        finally:
            for hook in hooks:
                hook.remove()
        maps = [
            self._block_cls_attention(
                block, tokens if self._batch_first else tokens.transpose(0, 1)
            )
            for block, tokens in zip(self._blocks, captured, strict=True)
        ]
        attention = torch.stack(maps).mean(dim=0)
        return attention.reshape(-1, self.grid_size, self.grid_size)

    @staticmethod
    def _block_cls_attention(block: nn.Module, tokens: Tensor) -> Tensor:
        """tokens [B,L,D] (after ln_1) -> [B,L-1]: head-averaged class-token attention."""
        attn: nn.MultiheadAttention = block.attn
        batch, length, dim = tokens.shape
        heads = attn.num_heads
        head_dim = dim // heads
        weight, bias = attn.in_proj_weight, attn.in_proj_bias
        q_bias = bias[:dim] if bias is not None else None
        k_bias = bias[dim : 2 * dim] if bias is not None else None
        query = F.linear(tokens[:, :1], weight[:dim], q_bias)
        key = F.linear(tokens, weight[dim : 2 * dim], k_bias)
        query = query.view(batch, 1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, length, heads, head_dim).transpose(1, 2)
        logits = query @ key.transpose(-2, -1) / head_dim**0.5
        return logits.softmax(dim=-1)[:, :, 0, 1:].mean(dim=1)


class ModelStore:
    """Loads each model once per process and keeps it (the daemon holds one for its lifetime).

    Loading and weight resolution happen under one lock, so concurrent jobs asking for the
    same model share one copy. ``weights_dir`` is the ``--clip-weights`` directory; the
    ``$CLIPASSO_WEIGHTS`` directory and the standard caches are searched after it.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        weights_dir: str | Path | None = None,
        allow_download: bool = True,
        precision: str = "auto",
        compile_mode: str | None = None,
    ) -> None:
        self.device = pick_device(device) if isinstance(device, str) else torch.device(device)
        self.weights_dir = Path(weights_dir).expanduser() if weights_dir else None
        self.allow_download = allow_download
        self.precision = precision
        #: torch.compile mode of the loss models (None: eager; see COMPILE_MODES)
        self.compile_mode = compile_mode
        self._lock = threading.RLock()
        self._files: dict[str, weights.WeightFile] = {}
        self._versions: dict[str, str] = {}
        self._loss: dict[str, LossModel] = {}
        self._saliency: dict[str, SaliencyModel] = {}
        self._background = None

    def weight_file(self, name: str) -> weights.WeightFile:
        """Resolve (once) the weight file of model ``name``; downloads only if allowed."""
        return self.require([name])[name]

    def require(self, names: list[str]) -> dict[str, weights.WeightFile]:
        """Resolve the weight files of all ``names`` at once, before any is loaded or
        downloaded: one MissingWeightsError lists every model missing (see weight_check).

        Names are CLIP model names or ``weight_check.BACKGROUND_MODEL``;
        ``weight_check.job_models(config)`` gives those of a job.
        """
        with self._lock:
            todo = [name for name in names if name not in self._files]
            if todo:
                self._files.update(
                    weight_check.resolve_all(todo, self.weights_dir, self.allow_download)
                )
            return {name: self._files[name] for name in names}

    def model_version(self, name: str) -> str:
        """``sha256:<12 hex>`` of the model's weight file, without loading the model."""
        with self._lock:
            if name not in self._versions:
                self._versions[name] = weights.file_version(self.weight_file(name).path)
            return self._versions[name]

    def loss_model(self, name: str, precision: str = "auto") -> LossModel:
        """The frozen ResNet loss model ``name``, loaded on first use, computing in a job's
        ``precision`` ("auto": the store's own; see LossModel.in_precision)."""
        spec = model_spec(name, RESNET)
        with self._lock:
            if name not in self._loss:
                with _out_of_memory_said(name, self.device):
                    visual = load_visual(spec, self.weight_file(name))
                    self._loss[name] = LossModel(
                        name,
                        self.model_version(name),
                        visual,
                        self.device,
                        self.precision,
                        self.compile_mode,
                    )
            return self._loss[name].in_precision(precision)

    def saliency_model(self, name: str) -> SaliencyModel:
        """The frozen ViT saliency model ``name``, loaded on first use."""
        spec = model_spec(name, VIT)
        with self._lock:
            if name not in self._saliency:
                with _out_of_memory_said(name, self.device):
                    visual = load_visual(spec, self.weight_file(name))
                    self._saliency[name] = SaliencyModel(
                        name, self.model_version(name), visual, self.device
                    )
            return self._saliency[name]

    def background_mask(self, image: Tensor) -> Tensor:
        """image [3,H,W] in [0,1] -> mask [1,H,W] in [0,1], 1 = foreground."""
        from clipasso_server.engine import background

        with self._lock:
            if self._background is None:
                path = self.weight_file(weight_check.BACKGROUND_MODEL).path
                with _out_of_memory_said(weight_check.BACKGROUND_MODEL, self.device):
                    self._background = background.load_background_file(path, self.device)
            model = self._background
        return model.mask(image)

    def loaded(self) -> list[str]:
        """The names of the models loaded so far (loss, saliency, then the background model)."""
        with self._lock:
            names = [*self._loss, *self._saliency]
            if self._background is not None:
                names.append(self._background.name)
            return names

    def describe(self, name: str) -> str:
        """``"<name> sha256:<12 hex>"``, for results and logs."""
        return f"{name} {self.model_version(name)}"


@contextlib.contextmanager
def _out_of_memory_said(name: str, device: torch.device) -> Iterator[None]:
    """Turn an allocation failure while a model moves to its device into OutOfMemoryError."""
    try:
        yield
    except EngineError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemoryError(
                f"out of memory while loading model {name} onto {device}: free some memory "
                f"or use a device with more ({type(exc).__name__}: {exc})"
            ) from exc
        raise


def write_test_weights(directory: str | Path) -> list[Path]:
    """Write the tiny test models' weights into ``directory``; same bytes on every run.

    The files are open_clip checkpoint state dicts in safetensors format, named as the
    resolver expects (``test-tiny-rn.safetensors``, ``test-tiny-vit.safetensors``).
    """
    import open_clip
    from safetensors.torch import save_file

    _register_test_configs()
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for offset, name in enumerate(TEST_MODELS):
        with torch.random.fork_rng(devices=[]), _without_random_init_warning():
            torch.manual_seed(TEST_WEIGHTS_SEED + offset)
            model = open_clip.create_model(_SPECS[name].arch, device="cpu")
            _randomise_batch_norms(model)
        state = {
            key: value.detach().clone().contiguous() for key, value in model.state_dict().items()
        }
        path = directory / f"{name}.safetensors"
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        save_file(state, str(partial), metadata={"format": "pt"})
        os.chmod(partial, 0o644)
        os.replace(partial, path)
        written.append(path)
    return written


class _RandomInitFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _without_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning
    (logged on the root logger): random weights are what the test models are."""
    root = logging.getLogger()
    quiet = _RandomInitFilter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


@torch.no_grad()
def _randomise_batch_norms(model: nn.Module) -> None:
    """Give batch norms random affine parameters and statistics.

    open_clip zero-initialises the last batch norm of every bottleneck, which would leave the
    tiny ResNet's residual branches dead (no signal, no gradient); random values exercise the
    whole architecture the way trained weights do.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
