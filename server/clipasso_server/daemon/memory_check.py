"""Whether a job fits in memory: refused at submission with a clear 422, not killed later.

The figures are the engine's (:func:`clipasso_server.engine.memory_estimate.
estimate_peak_bytes`, torch-free, fitted to ``bench/memory.py``'s measurements): a job's peak
grows with levels x seeds. Free memory: MemAvailable (``/proc/meminfo``) on the CPU, plus what
the worker process already holds (the estimate counts the whole process, Python and torch
included); on a GPU what the worker last reported from ``torch.cuda.mem_get_info`` (plus the
memory torch's allocator caches but does not use).
"""

from __future__ import annotations

from typing import Any

from clipasso_server.daemon.worker_process import mem_available_bytes
from clipasso_server.engine.memory_estimate import (
    MARGIN,
    device_kind,
    estimate_peak_bytes,
    format_bytes,
    peak_bytes,
)
from inkscape_clipasso import protocol


def check_fits(settings: protocol.SketchSettings, workers: list[dict[str, Any]]) -> None:
    """ProtocolError ``insufficient_memory`` when the job fits on none of the workers.

    A worker whose free memory is unknown (still starting, not Linux) counts as room. On the
    CPU the worker's own memory counts as free: the estimate includes the whole process, and a
    busy worker's job gives its memory back when it ends.
    """
    if not workers:
        return
    host = mem_available_bytes()
    needs: list[tuple[str, str, int, int]] = []
    for worker in workers:
        device = str(worker.get("device", "cpu"))
        kind = "cpu" if device in ("cpu", "auto") else device_kind(device)
        need = estimate_peak_bytes(settings.levels, settings.seeds, kind, settings.loss_model)
        if kind == "cpu":
            free = host.get("free_bytes")
            if free is not None:
                free += int(worker.get("rss_bytes") or 0)
        else:
            free = worker.get("free_bytes")
        if free is None or need <= free:
            return
        needs.append((device, kind, need, int(free)))
    device, kind, need, free = max(needs, key=lambda item: item[3])
    peak = peak_bytes(settings.levels, settings.seeds, kind, settings.loss_model)
    raise protocol.ProtocolError(
        "insufficient_memory",
        f"this job peaks at about {format_bytes(peak)} of memory on {device} "
        f"({len(settings.levels)} levels x {settings.seeds} seeds with {settings.loss_model}), "
        f"{format_bytes(need)} with {round((MARGIN - 1) * 100)} % headroom, "
        f"but only {format_bytes(free)} is free; use fewer levels or seeds, free some memory, "
        "or use a GPU",
    )
