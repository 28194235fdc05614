"""How much memory a sketch job needs at its peak, known before it runs; no torch.

A job that does not fit is killed by the kernel (CPU) or fails with an allocation error
(GPU) after the user waited for it; refusing it up front needs a figure. Peak memory grows
linearly with the number of sketches optimised together (levels x seeds): every sketch adds
its rendered canvas and the loss model's activations for its augmented views, while the
stroke count hardly matters. The constants below are least-squares fits of what
``bench/memory.py`` measured (see its JSON under bench/results/); refit them there when the
engine changes.
"""

from __future__ import annotations

from collections.abc import Sequence

MIB = 2**20

#: (device kind, model family) -> (base MiB, MiB per sketch), peak of a whole job.
#: CPU: peak RSS of the process (Python, torch and the models included), 2 threads.
#: CUDA: ``torch.cuda.max_memory_allocated`` (the CUDA context, ~0.5 GB, not included).
PEAK_FIT: dict[tuple[str, str], tuple[float, float]] = {
    # bench/memory.py --models tiny: 6 cells from 1x1 (960 MiB) to 4x3 (1345 MiB), worst
    # error of the fit 1.4 %
    ("cpu", "tiny"): (921.0, 35.2),
    # bench/memory.py --models rn101 --grid 1x1,4x3 (random full-size weights): 2232 MiB
    # (the models' loading peak) and 6164 MiB. Between them the real peak is
    # max(loading peak, loaded models + the step's), which this line stays above.
    ("cpu", "rn101"): (1875.0, 357.5),
    # Not measured here (no GPU). Device memory holds the visual towers only (RN101's and
    # ViT-B/32's: ~0.6 GB in float32; the full models load on the CPU first) and, per
    # sketch, at most the CPU's float32 figure (bf16 autocast on the GPU needs less).
    ("cuda", "tiny"): (50.0, 35.2),
    ("cuda", "rn101"): (600.0, 357.5),
}
#: headroom over the fitted figure (allocator slack, other images' sizes, fit error)
MARGIN = 1.15


def model_family(loss_model: str) -> str:
    """The row of :data:`PEAK_FIT` for a loss model: the tiny test models, or full size
    (RN101's figures also stand for the other CLIP ResNets, a little above RN50's)."""
    return "tiny" if loss_model.startswith("test-tiny") else "rn101"


def device_kind(device: str) -> str:
    """ "cpu" or "cuda" (MPS is counted like a GPU) from a device name such as "cuda:1"."""
    kind = device.split(":", 1)[0]
    return "cpu" if kind == "cpu" else "cuda"


def peak_bytes(
    levels: int | Sequence[int], seeds: int, device_kind_: str, model: str = "RN101"
) -> int:
    """The fitted peak in bytes, without headroom: what ``bench/memory.py`` measures (the
    figure the README and ``clipasso serve --help`` give). Arguments as for
    :func:`estimate_peak_bytes`."""
    count = levels if isinstance(levels, int) else len(levels)
    if count < 1 or seeds < 1:
        raise ValueError(f"levels and seeds must be at least 1, got {count} and {seeds}")
    base, per_sketch = PEAK_FIT[(device_kind(device_kind_), model_family(model))]
    return int((base + per_sketch * count * seeds) * MIB)


def estimate_peak_bytes(
    levels: int | Sequence[int], seeds: int, device_kind_: str, model: str = "RN101"
) -> int:
    """Peak memory in bytes of one job of ``levels`` x ``seeds`` sketches with loss model
    ``model`` on a device of kind ``device_kind_`` ("cpu", "cuda", "cuda:0", "mps").

    ``levels`` is the number of levels or the levels' stroke counts. Includes
    :data:`MARGIN`. On CPU it is the whole process's resident memory; on a GPU the device
    memory the job allocates.
    """
    return int(peak_bytes(levels, seeds, device_kind_, model) * MARGIN)


def memory_text(levels: int, seeds: int, model: str) -> str:
    """What a job of ``levels`` x ``seeds`` with ``model`` (the default job, as ``clipasso
    serve --help`` says it) needs: the one source of the figures users are told."""
    cpu = peak_bytes(levels, seeds, "cpu", model)
    one = peak_bytes(1, 1, "cpu", model)
    gpu = peak_bytes(levels, seeds, "cuda", model)
    per_sketch = PEAK_FIT[("cpu", model_family(model))][1] * MIB
    return (
        f"Memory: the default job ({levels} levels x {seeds} seeds with {model}) peaks at "
        f"about {format_bytes(cpu)} on the CPU (measured with bench/memory.py), 1 level x 1 "
        f"seed at about {format_bytes(one)}; each level x seed adds about "
        f"{format_bytes(per_sketch)}. On a GPU (not measured) about {format_bytes(gpu)} of "
        f"device memory. A job whose peak plus {round((MARGIN - 1) * 100)} % headroom does not "
        "fit in its device's free memory is refused (422 insufficient_memory)."
    )


def format_bytes(count: float) -> str:
    """ "6.7 GB"-style, for messages."""
    if count >= 10**9:
        return f"{count / 10**9:.1f} GB"
    return f"{count / 10**6:.0f} MB"
