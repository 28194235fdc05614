"""How long a sketch will take, in words, and whether waiting for it is worth it.

Inkscape shows nothing but "please wait" while an extension runs, and anything written to
stderr opens a dialog, so the estimate is used twice: before the wait, to refuse at once a job
that cannot end within the time limit when reaching the limit would throw its work away; and
afterwards, on the inserted layer, to say how long it took and how long the whole job would
have taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from inkscape_clipasso.protocol import format_duration

#: An estimate this many times over the time left is "far beyond" it.
FAR_BEYOND = 2.0


@dataclass(frozen=True)
class Estimate:
    """The daemon's word on the jobs, the first time it knew: ``seconds`` until all end and
    the measured ``steps_per_s`` (None until measured)."""

    seconds: float
    steps_per_s: float | None

    def rate_text(self) -> str:
        """``0.21 steps/s`` or nothing."""
        return f"{self.steps_per_s:.3g} steps/s" if self.steps_per_s else ""


def too_long_message(estimate: Estimate, limit_text: str) -> str:
    """The message that refuses a job which would be cancelled at the limit, with what to
    change."""
    return (
        f"This sketch would take about {format_duration(estimate.seconds)} on the daemon "
        f"({estimate.rate_text() or 'its measured speed'}), far beyond the time "
        f"limit of {limit_text}, and at the limit it would be cancelled and its strokes lost; "
        "nothing was changed. Ask for fewer iterations, levels or seeds, choose a longer time "
        'limit, or "insert the best strokes so far" on the Output page; a daemon on a machine '
        "with a GPU is many times faster."
    )


def is_far_beyond(estimate: Estimate, seconds_left: float) -> bool:
    """Whether the estimate is far beyond the time left in the wait."""
    return estimate.seconds > FAR_BEYOND * max(seconds_left, 1.0)


def describe(
    estimate: Estimate | None, waited_s: float, steps_run: int | None, iterations: int
) -> str:
    """The layer's description: how long it took, and the estimate the daemon gave."""
    parts = [f"Waited {format_duration(waited_s)} for this sketch."]
    if estimate is not None:
        rate = estimate.rate_text()
        parts.append(
            f"The daemon estimated {format_duration(estimate.seconds)} when its speed was "
            f"first known{f', {rate}' if rate else ''}."
        )
    # the steps are said whatever the estimate (none for a cached or a multi-photo run)
    if steps_run is not None and steps_run < iterations:
        whole = ""
        if estimate is not None and estimate.steps_per_s:
            all_s = iterations / estimate.steps_per_s
            whole = f"; all of them would take about {format_duration(all_s)}"
        parts.append(f"It ran {steps_run} of {iterations} steps{whole}.")
    elif steps_run is not None:
        parts.append(f"It ran all {iterations} steps.")
    return " ".join(parts)
