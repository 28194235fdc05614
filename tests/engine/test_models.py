"""CLIP models, weight resolution, test weights, device choice and the background mask.

Everything loads through open_clip / torchvision for real; the tiny test models stand in for
RN101 and ViT-B/32 because those weights cannot be downloaded here. No test touches the
network: HF_HUB_OFFLINE is set by conftest and stores are built with allow_download=False.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from open_clip.modified_resnet import ModifiedResNet  # noqa: E402
from open_clip.transformer import VisionTransformer  # noqa: E402

from clipasso_server.cli import main as cli_main  # noqa: E402
from clipasso_server.engine import background, model_specs, weight_check, weights  # noqa: E402
from clipasso_server.engine.clip_models import (  # noqa: E402
    TEST_LOSS_MODEL,
    TEST_SALIENCY_MODEL,
    ModelStore,
    known_models,
    write_test_weights,
)
from clipasso_server.engine.device import pick_device  # noqa: E402
from clipasso_server.engine.errors import (  # noqa: E402
    MissingWeightsError,
    SettingsError,
    UnreadableWeightsError,
)

TEST_FILES = (f"{TEST_LOSS_MODEL}.safetensors", f"{TEST_SALIENCY_MODEL}.safetensors")


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """A home with empty caches and no CLIPASSO_WEIGHTS, so only what a test puts there counts."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf-hub"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _copy_weights(source: Path, target: Path, name: str) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source / f"{name}.safetensors", target / f"{name}.safetensors"))


def _fake_hf_cache(hub: Path, repo: str, filename: str, content: bytes) -> Path:
    """Lay out a Hugging Face cache entry the way huggingface_hub writes one."""
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(content)
    return snapshot / filename


# --- devices -----------------------------------------------------------------------------------


def test_pick_device_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu"])
def test_pick_device_rejects_unknown_names(name):
    with pytest.raises(SettingsError, match="unknown device"):
        pick_device(name)


def test_pick_device_rejects_absent_cuda():
    if torch.cuda.is_available():
        with pytest.raises(SettingsError, match="cuda:0 to"):
            pick_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(SettingsError, match="CUDA is not available"):
            pick_device("cuda")


# --- names -------------------------------------------------------------------------------------


def test_known_models_cover_reference_and_test_models():
    names = known_models()
    for name in ("RN101", "ViT-B-32", TEST_LOSS_MODEL, TEST_SALIENCY_MODEL):
        assert name in names


def test_unknown_and_misplaced_model_names(model_store):
    with pytest.raises(SettingsError, match="RN101") as unknown:
        model_store.loss_model("RN9000")
    assert "ViT-B-32" in unknown.value.message and "RN9000" in unknown.value.message
    with pytest.raises(SettingsError, match="loss model"):
        model_store.loss_model(TEST_SALIENCY_MODEL)
    with pytest.raises(SettingsError, match="saliency model"):
        model_store.saliency_model("RN101")


# --- tiny models through open_clip ---------------------------------------------------------------


def test_tiny_models_load_frozen_in_eval_mode(model_store):
    loss = model_store.loss_model(TEST_LOSS_MODEL)
    saliency = model_store.saliency_model(TEST_SALIENCY_MODEL)
    assert isinstance(loss.visual, ModifiedResNet)
    assert isinstance(saliency.visual, VisionTransformer)
    for visual in (loss.visual, saliency.visual):
        assert not any(p.requires_grad for p in visual.parameters())
        assert not any(m.training for m in visual.modules())
    assert loss.input_size == saliency.input_size == 224
    assert saliency.grid_size == 7


def test_store_loads_once_and_reports_versions(model_store, test_weights_dir):
    first = model_store.loss_model(TEST_LOSS_MODEL)
    assert model_store.loss_model(TEST_LOSS_MODEL) is first
    assert model_store.saliency_model(TEST_SALIENCY_MODEL) is model_store.saliency_model(
        TEST_SALIENCY_MODEL
    )
    assert {TEST_LOSS_MODEL, TEST_SALIENCY_MODEL} <= set(model_store.loaded())
    data = (test_weights_dir / f"{TEST_LOSS_MODEL}.safetensors").read_bytes()
    version = f"sha256:{hashlib.sha256(data).hexdigest()[:12]}"
    assert first.version == model_store.model_version(TEST_LOSS_MODEL) == version
    assert model_store.describe(TEST_LOSS_MODEL) == f"{TEST_LOSS_MODEL} {version}"


def test_model_version_does_not_load_the_model(test_weights_dir):
    store = ModelStore("cpu", weights_dir=test_weights_dir, allow_download=False)
    assert store.model_version(TEST_SALIENCY_MODEL).startswith("sha256:")
    assert store.loaded() == []


def test_features_shapes_and_gradients(model_store):
    loss = model_store.loss_model(TEST_LOSS_MODEL)
    images = torch.rand(3, 3, 224, 224, requires_grad=True)
    maps, embedding = loss.features(images)
    assert [tuple(m.shape) for m in maps] == [(3, 64, 28, 28), (3, 128, 14, 14)]
    assert tuple(embedding.shape) == (3, loss.embed_dim)
    (sum(m.square().mean() for m in maps) + embedding.square().mean()).backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.visual.parameters())


def test_features_embedding_is_open_clips_forward_on_normalised_images(model_store):
    loss = model_store.loss_model(TEST_LOSS_MODEL)
    images = torch.rand(2, 3, 224, 224)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        _, embedding = loss.features(images)
        expected = loss.visual((images - mean) / std)
    torch.testing.assert_close(embedding, expected)


@pytest.mark.parametrize(
    ("native", "arithmetic"), [(True, "bfloat16 autocast"), (False, "float32")]
)
def test_auto_computes_in_bf16_only_on_a_cpu_that_does_natively(
    test_weights_dir, monkeypatch, native, arithmetic
):
    """ "auto" on the CPU: bf16 autocast where the CPU computes bf16 natively (half the time,
    bench/precision.py), float32 where oneDNN would only convert and gain nothing."""
    from clipasso_server.engine import clip_models

    monkeypatch.setattr(clip_models, "cpu_computes_bf16", lambda: native)
    store = ModelStore("cpu", test_weights_dir, allow_download=False)
    model = store.loss_model(TEST_LOSS_MODEL)
    assert model.arithmetic == arithmetic
    assert model.in_precision("auto") is model
    assert model.in_precision("fp32").arithmetic == "float32"
    assert model.in_precision("bf16").arithmetic == "bfloat16 autocast"
    images = torch.rand(1, 3, model.input_size, model.input_size)
    _, embedding = model.features(images)
    assert embedding.dtype == torch.float32  # returned in the weights' dtype either way


def test_a_precision_view_shares_the_weights_and_is_made_once(model_store):
    model = model_store.loss_model(TEST_LOSS_MODEL)
    other = "bf16" if model.arithmetic == "float32" else "fp32"
    view = model.in_precision(other)
    assert view is not model and model.in_precision(other) is view
    assert view.visual is model.visual
    images = torch.rand(2, 3, model.input_size, model.input_size)
    _, mine = model.features(images)
    _, theirs = view.features(images)
    assert not torch.equal(mine, theirs)
    assert torch.allclose(mine, theirs, rtol=0.1, atol=0.05 * float(mine.abs().max()))


def test_cpu_computes_bf16_follows_torchs_cpu_checks(monkeypatch):
    from clipasso_server.engine import clip_models

    for avx512_bf16, amx, expected in [
        (True, False, True),
        (False, True, True),
        (False, False, False),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert clip_models.cpu_computes_bf16() is expected


def test_features_reject_wrong_size(model_store):
    with pytest.raises(ValueError, match="224"):
        model_store.loss_model(TEST_LOSS_MODEL).features(torch.rand(1, 3, 100, 100))


def test_cls_attention_matches_torch_attention_weights(model_store):
    saliency = model_store.saliency_model(TEST_SALIENCY_MODEL)
    images = torch.rand(2, 3, 224, 224)
    attention = saliency.cls_attention(images)
    assert tuple(attention.shape) == (2, 7, 7)
    assert (attention > 0).all()
    sums = attention.sum(dim=(1, 2))
    assert ((sums > 0) & (sums <= 1)).all()

    # torch's own MultiheadAttention weights, from each block's input, as the reference
    inputs = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
        for block in saliency.visual.transformer.resblocks
    ]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        saliency.visual((images - mean) / std)
        per_block = []
        for block, x in zip(saliency.visual.transformer.resblocks, inputs, strict=True):
            h = block.ln_1(x)
            _, w = block.attn(h, h, h, need_weights=True, average_attn_weights=True)
            per_block.append(w[:, 0, 1:])
    for hook in hooks:
        hook.remove()
    expected = torch.stack(per_block).mean(0).reshape(2, 7, 7)
    torch.testing.assert_close(attention, expected)


def test_cls_attention_differs_between_images(model_store):
    saliency = model_store.saliency_model(TEST_SALIENCY_MODEL)
    generator = torch.Generator().manual_seed(1)
    noise = torch.rand(1, 3, 224, 224, generator=generator)
    flat = torch.full((1, 3, 224, 224), 0.5)
    maps = saliency.cls_attention(torch.cat([noise, flat]))
    assert not torch.allclose(maps[0], maps[1])


# --- test weights ---------------------------------------------------------------------------------


def test_make_test_weights_is_deterministic_and_runs_through_the_cli(tmp_path, test_weights_dir):
    assert cli_main(["make-test-weights", str(tmp_path / "cli")]) == 0
    for name in TEST_FILES:
        produced = (tmp_path / "cli" / name).read_bytes()
        assert produced == (test_weights_dir / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(TEST_FILES)


def test_written_weights_load_in_plain_open_clip(test_weights_dir):
    from clipasso_server.engine.clip_models import model_spec

    model_spec(TEST_LOSS_MODEL)  # registers the tiny configs with open_clip
    model = open_clip.create_model(
        TEST_SALIENCY_MODEL, pretrained=str(test_weights_dir / TEST_FILES[1])
    )
    assert isinstance(model.visual, VisionTransformer)


def test_write_test_weights_twice_same_bytes(tmp_path):
    first = write_test_weights(tmp_path / "a")
    second = write_test_weights(tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


# --- weight resolution -------------------------------------------------------------------------


def test_explicit_dir_beats_env_dir(clean_env, tmp_path, monkeypatch, test_weights_dir):
    explicit = _copy_weights(test_weights_dir, tmp_path / "explicit", TEST_LOSS_MODEL)
    env_file = _copy_weights(test_weights_dir, tmp_path / "env", TEST_LOSS_MODEL)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(env_file.parent))
    chosen = ModelStore("cpu", weights_dir=explicit.parent, allow_download=False)
    assert chosen.weight_file(TEST_LOSS_MODEL).path == explicit
    from_env = ModelStore("cpu", allow_download=False)
    assert from_env.weight_file(TEST_LOSS_MODEL).path == env_file
    assert from_env.weight_file(TEST_LOSS_MODEL).origin == weights.ORIGIN_ENV
    assert from_env.loss_model(TEST_LOSS_MODEL).version == chosen.model_version(TEST_LOSS_MODEL)


def test_explicit_dir_beats_hf_cache_beats_clip_cache(clean_env, tmp_path):
    cached = _fake_hf_cache(
        clean_env / "hf-hub", "timm/resnet101_clip.openai", "open_clip_model.safetensors", b"hf"
    )
    clip_dir = clean_env / ".cache" / "clip"
    clip_dir.mkdir(parents=True)
    (clip_dir / "RN101.pt").write_bytes(b"never reached")
    assert ModelStore("cpu").weight_file("RN101").path == cached
    assert ModelStore("cpu").weight_file("RN101").origin == weights.ORIGIN_CACHE
    explicit = tmp_path / "mine"
    explicit.mkdir()
    (explicit / "RN101.safetensors").write_bytes(b"mine")
    assert ModelStore("cpu", weights_dir=explicit).weight_file("RN101").path == (
        explicit / "RN101.safetensors"
    )


def _request(download, tmp_path: Path) -> weights.WeightRequest:
    return weights.WeightRequest(
        model="demo",
        file_names=("demo.safetensors",),
        cache_paths=(tmp_path / "cache" / "demo.pt",),
        download=download,
    )


def test_cache_beats_download_and_download_comes_last(clean_env, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def download() -> Path:
        calls.append(1)
        target = tmp_path / "downloaded" / "demo.pt"
        target.parent.mkdir()
        target.write_bytes(b"fresh")
        return target

    found = weights.resolve(_request(download, tmp_path), allow_download=True)
    assert found.origin == weights.ORIGIN_DOWNLOAD and found.path.read_bytes() == b"fresh"
    assert calls == [1]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "demo.pt").write_bytes(b"cached")
    found = weights.resolve(_request(download, tmp_path), allow_download=True)
    assert found.origin == weights.ORIGIN_CACHE and calls == [1]


def test_failed_download_is_a_missing_weights_error(clean_env, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def download() -> Path:
        raise OSError("Network is unreachable")

    with pytest.raises(MissingWeightsError, match="Network is unreachable") as error:
        weights.resolve(_request(download, tmp_path), allow_download=True)
    assert "demo.safetensors" in error.value.message


def test_offline_missing_weights_message(clean_env, tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    for allow in (True, False):
        with pytest.raises(MissingWeightsError) as error:
            ModelStore("cpu", weights_dir=empty, allow_download=allow).loss_model("RN101")
        message = error.value.message
        assert error.value.code == "missing_weights"
        for part in ("RN101", "RN101.pt", "RN101.safetensors", str(empty), "--clip-weights"):
            assert part in message
        assert "CLIPASSO_WEIGHTS" in message
        assert str(clean_env / ".cache" / "clip") in message


def test_missing_test_weights_point_to_make_test_weights(clean_env, tmp_path):
    with pytest.raises(MissingWeightsError, match="make-test-weights") as error:
        ModelStore("cpu", weights_dir=tmp_path, allow_download=False).model_version(
            TEST_SALIENCY_MODEL
        )
    assert f"{TEST_SALIENCY_MODEL}.safetensors" in error.value.message


def test_wrong_hash_in_clip_cache(clean_env):
    clip_dir = clean_env / ".cache" / "clip"
    clip_dir.mkdir(parents=True)
    bad = clip_dir / "RN101.pt"
    bad.write_bytes(b"half a download")
    with pytest.raises(MissingWeightsError, match="SHA-256") as error:
        ModelStore("cpu", allow_download=False).loss_model("RN101")
    assert str(bad) in error.value.message and "delete or replace" in error.value.message


def test_weights_of_another_model_are_refused(tmp_path, test_weights_dir):
    shutil.copy(test_weights_dir / TEST_FILES[1], tmp_path / TEST_FILES[0])
    store = ModelStore("cpu", weights_dir=tmp_path, allow_download=False)
    with pytest.raises(MissingWeightsError, match="cannot load"):
        store.loss_model(TEST_LOSS_MODEL)


def test_missing_weights_directory_is_reported(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ModelStore("cpu", weights_dir=tmp_path / "nope").model_version(TEST_LOSS_MODEL)


# --- background mask ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_background_dir(tmp_path_factory):
    """A weights directory with randomly initialised segmentation weights under the real name."""
    directory = tmp_path_factory.mktemp("background")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = background.build_segmentation_model()
    torch.save(network.state_dict(), directory / background.BACKGROUND_FILE)
    return directory


def test_background_weights_missing_offline(clean_env, tmp_path):
    store = ModelStore("cpu", weights_dir=tmp_path, allow_download=False)
    with pytest.raises(MissingWeightsError) as error:
        store.background_mask(torch.rand(3, 32, 32))
    message = error.value.message
    assert background.BACKGROUND_FILE in message
    assert str(clean_env / "torch" / "hub" / "checkpoints") in message
    assert str(tmp_path) in message


def test_background_mask_through_the_store(clean_env, random_background_dir):
    store = ModelStore("cpu", weights_dir=random_background_dir, allow_download=False)
    mask = store.background_mask(torch.rand(3, 40, 60))
    assert tuple(mask.shape) == (1, 40, 60)
    assert ((mask >= 0) & (mask <= 1)).all()
    assert background.BACKGROUND_MODEL in store.loaded()


def test_background_mask_keeps_image_when_nothing_is_found(random_background_dir):
    model = background.load_background_file(random_background_dir / background.BACKGROUND_FILE)
    head = model.network.classifier[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[0] = 10.0  # everything is background
    image = torch.rand(3, 30, 30)
    assert torch.equal(model.mask(image), torch.ones(1, 30, 30))
    with torch.no_grad():
        head.bias[0] = -10.0
        head.bias[15] = 10.0  # everything is a person
    mask = model.mask(image)
    assert mask.min() > 0.99
    half = torch.cat([torch.zeros(1, 30, 15), torch.ones(1, 30, 15)], dim=2)
    whitened = background.whiten_background(image, half)
    assert torch.equal(whitened[:, :, :15], torch.ones(3, 30, 15))
    assert torch.equal(whitened[:, :, 15:], image[:, :, 15:])


# --- every weight file of a job at once (issue 15.1), what really failed (issue 10) -----------


def _all_three():
    from inkscape_clipasso.protocol import SketchSettings

    return weight_check.job_models(SketchSettings(remove_background=True))


def test_find_missing_lists_every_model_with_names_folders_and_addresses(clean_env, tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    names = _all_three()
    assert names == ["RN101", "ViT-B-32", weight_check.BACKGROUND_MODEL]
    missing = weight_check.find_missing(names, empty, allow_download=True)
    assert [entry.model for entry in missing] == names
    assert all(entry.folders == (empty,) for entry in missing)
    assert all("HF_HUB_OFFLINE" in entry.reason for entry in missing)
    message = weight_check.missing_message(missing)
    for part in (
        "3 models",
        "RN101.pt",
        "RN101/open_clip_model.safetensors",
        "ViT-B-32.pt",
        background.BACKGROUND_FILE,
        str(empty),
        str(clean_env / ".cache" / "clip"),
        str(clean_env / "torch" / "hub" / "checkpoints"),
        model_specs.model_spec("RN101").url,
        model_specs.model_spec("ViT-B-32").url,
        background.BACKGROUND_URL,
    ):
        assert part in message, part
    assert len(message.splitlines()) == 4  # a head line, then one line per model


def test_store_resolves_every_file_before_loading_any(clean_env, tmp_path, test_weights_dir):
    _copy_weights(test_weights_dir, tmp_path, TEST_LOSS_MODEL)
    store = ModelStore("cpu", weights_dir=tmp_path, allow_download=False)
    with pytest.raises(MissingWeightsError) as error:
        store.require([TEST_LOSS_MODEL, TEST_SALIENCY_MODEL, "ViT-B-32"])
    message = error.value.message
    assert TEST_SALIENCY_MODEL in message and "ViT-B-32" in message
    assert f"- {TEST_LOSS_MODEL}" not in message and "make-test-weights" in message
    assert store.loaded() == []
    _copy_weights(test_weights_dir, tmp_path, TEST_SALIENCY_MODEL)
    found = store.require([TEST_LOSS_MODEL, TEST_SALIENCY_MODEL])
    assert found[TEST_SALIENCY_MODEL].path == tmp_path / f"{TEST_SALIENCY_MODEL}.safetensors"


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_servers_make_weights_missing_without_a_download(
    clean_env, tmp_path, monkeypatch, capfd
):
    """Offline without HF_HUB_OFFLINE: one quick probe, no download library, no chatter."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    dead = f"http://127.0.0.1:{_closed_port()}"
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, dead)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    weights._probe_cache.clear()
    with pytest.raises(MissingWeightsError) as error:
        ModelStore("cpu", weights_dir=tmp_path, allow_download=True).require(["RN101", "ViT-B-32"])
    message = error.value.message
    assert "Offline" in message and "huggingface.co" in message and "refused" in message
    assert "RN101" in message and "ViT-B-32" in message
    assert capfd.readouterr().err == ""
    assert not (clean_env / "hf-hub").exists()
    assert not (clean_env / ".cache" / "clip").exists()


def test_unreachable_probe_answers_for_a_live_and_a_dead_server():
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        live = f"http://127.0.0.1:{server.server_address[1]}/x"
        dead = f"http://127.0.0.1:{_closed_port()}/x"
        assert weights.unreachable([live]) is None
        assert weights.unreachable([dead, live]) is None
        reason = weights.unreachable([dead])
        assert reason is not None and "127.0.0.1" in reason
    finally:
        server.shutdown()
        server.server_close()


def test_weight_check_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from clipasso_server.engine import weight_check as w; "
        f"m = w.find_missing(['RN101', 'ViT-B-32', w.BACKGROUND_MODEL], {str(tmp_path)!r}, False); "
        "assert len(m) == 3, m; w.missing_message(m); print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_damaged_file_is_unreadable_not_missing(clean_env, tmp_path):
    (tmp_path / f"{TEST_LOSS_MODEL}.safetensors").write_bytes(b"not a safetensors file")
    store = ModelStore("cpu", weights_dir=tmp_path, allow_download=False)
    with pytest.raises(UnreadableWeightsError) as error:
        store.loss_model(TEST_LOSS_MODEL)
    assert error.value.code == "bad_weights"
    assert "damaged" in error.value.message and "no weights found" not in error.value.message


def test_a_wrong_hash_is_reported_as_damaged_by_find_missing(clean_env):
    clip_dir = clean_env / ".cache" / "clip"
    clip_dir.mkdir(parents=True)
    (clip_dir / "RN101.pt").write_bytes(b"half a download")
    [entry] = weight_check.find_missing(["RN101"], allow_download=False)
    assert entry.damaged and "SHA-256" in entry.reason
    with pytest.raises(UnreadableWeightsError) as error:
        ModelStore("cpu", allow_download=False).require(["RN101"])
    assert error.value.code == "bad_weights"


def test_out_of_memory_while_loading_says_out_of_memory(test_weights_dir):
    """A real allocation failure (an address-space limit) is not reported as missing weights."""
    import subprocess
    import sys

    code = f"""
import re, resource, torch
from clipasso_server.engine.clip_models import ModelStore, _register_test_configs
torch.set_num_threads(1)
store = ModelStore("cpu", weights_dir={str(test_weights_dir)!r}, allow_download=False)
store.model_version("{TEST_LOSS_MODEL}")
_register_test_configs()
size = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 1_000_000, resource.RLIM_INFINITY))
try:
    store.loss_model("{TEST_LOSS_MODEL}")
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "code", ""))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.stdout.split() == ["OutOfMemoryError", "insufficient_memory"], done.stderr


def test_a_failing_download_is_reported_once_without_the_librarys_retry_lines(
    clean_env, tmp_path, monkeypatch, caplog
):
    import logging

    monkeypatch.delenv("HF_HUB_OFFLINE")

    def download() -> Path:
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 8s [Retry 4/5].")
        raise OSError("Network is unreachable")

    with caplog.at_level(logging.WARNING), pytest.raises(MissingWeightsError) as error:
        weights.resolve(_request(download, tmp_path), allow_download=True)
    assert "Network is unreachable" in error.value.message
    assert "Retrying" not in caplog.text
