#!/usr/bin/env python3
"""Extensions > CLIPasso > Sketch: line sketches of the selected images as new layers.

Inkscape runs this file as a script from the extension's folder, with its own Python (inkex,
lxml and the standard library only). Each selected bitmap goes to the local CLIPasso daemon;
the strokes come back in the bitmap's pixels and are laid exactly over the image. Every failure
is an AbortExtension, so Inkscape shows the message and keeps the document as it was. Nothing
is written to stdout (it carries the document) nor, on success, to stderr (which would open a
dialog that blocks batch runs): selected objects that are not images are skipped silently and
listed on the new layers instead.

The user may choose not to wait: the jobs are then submitted detached, the layers inserted at
once with whatever strokes the daemon has so far (else empty levels), each named as running and
recording its job, and Extensions > CLIPasso > Update sketches (clipasso_update.py) brings the
newer strokes in later. By default that happens when the daemon expects more than a minute.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a file: make the folder holding the inkscape_clipasso package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import inkex

from inkscape_clipasso import protocol
from inkscape_clipasso.abandonment import output_closed
from inkscape_clipasso.bitmap_size import bitmap_size
from inkscape_clipasso.daemon_client import DaemonClient, DaemonError
from inkscape_clipasso.estimate import describe
from inkscape_clipasso.image_source import (
    ImageError,
    SourceImage,
    display_name,
    read_image,
    split_selection,
)
from inkscape_clipasso.job_runner import JobOutcome, WaitOptions, run_jobs
from inkscape_clipasso.layer_state import read_record
from inkscape_clipasso.layer_update import UpdateError, apply_result
from inkscape_clipasso.layers import (
    LayerOptions,
    build_sketch_layer,
    empty_result,
    ns,
    parent_label,
    unfinished_layer,
    visible_levels,
)
from inkscape_clipasso.links import anchor_relative_links
from inkscape_clipasso.live_view import open_page, page_url
from inkscape_clipasso.placement import place_image
from inkscape_clipasso.refine import (
    START_CHOICES,
    RefineJob,
    build_refined_layer,
    image_digest,
    refine_selection,
    refine_settings,
)
from inkscape_clipasso.stroke_import import import_strokes

#: Longest single HTTP request; the overall deadline comes from the time limit.
REQUEST_TIMEOUT_S = 30.0
#: The time limit's presets in the dialog, in seconds (0: no limit).
TIME_LIMITS = ("600", "120", "3600", "0")
#: Beyond the engine's own budget, time for loading models and moving the results.
GRACE_S, GRACE_FRACTION = 30.0, 0.1
#: "When to insert": after the wait, at once, or at once when the daemon expects the jobs to
#: take longer than this many seconds ("auto", the default).
WHEN_CHOICES = ("auto", "wait", "now")
AUTO_NOW_BEYOND_S = 60.0
UPDATE_HINT = "Extensions > CLIPasso > Update sketches brings in the newer strokes."
#: a refined level's description when the sketch level it came from was hidden under it
SOURCE_HIDDEN = "The level it was refined from is hidden below it (Layers: its eye shows it)."
SELECT_HINT = (
    "Select one or more bitmap images (an imported photo: File > Import, then click it) "
    "and run Extensions > CLIPasso > Sketch again."
)


def colour_hex(colour: inkex.Color) -> str:
    """``#rrggbb``, or ``#rrggbbaa`` when the colour is not opaque."""
    red, green, blue = (int(channel) for channel in colour.to_rgb())
    alpha = float(getattr(colour, "alpha", 1.0))
    text = f"#{red:02x}{green:02x}{blue:02x}"
    return text if alpha >= 1.0 else f"{text}{round(alpha * 255):02x}"


class ClipassoSketch(inkex.EffectExtension):
    """The effect; its arguments mirror extension.inx one for one."""

    def add_arguments(self, pars) -> None:
        pars.add_argument("--tab", default="sketch", help="the notebook page (unused)")
        # Sketch
        pars.add_argument("--levels", default="4,8,16,32", help="stroke counts, one layer each")
        pars.add_argument("--iterations", type=int, default=2000)
        pars.add_argument("--seeds", type=int, default=3, help="tries per level, best kept")
        pars.add_argument(
            "--schedule", default="full", choices=protocol.SCHEDULES, help="full, or fast (Quick)"
        )
        pars.add_argument(
            "--precision",
            default="auto",
            choices=protocol.PRECISIONS,
            help="the loss model's arithmetic: auto, fp32 (Exact) or bf16 (Fast)",
        )
        pars.add_argument("--seed", type=int, default=0, help="random seed")
        pars.add_argument("--width_mode", default="reference", choices=("reference", "document"))
        pars.add_argument("--width", type=float, default=0.5, help="in document units")
        pars.add_argument("--color", type=inkex.Color, default=inkex.Color("#000000"))
        pars.add_argument("--remove_background", type=inkex.Boolean, default=False)
        pars.add_argument(
            "--time_limit", default=TIME_LIMITS[0], choices=TIME_LIMITS, help="seconds; 0: none"
        )
        pars.add_argument(
            "--when", default=WHEN_CHOICES[0], choices=WHEN_CHOICES, help="when to insert"
        )
        # Refine from my strokes (refine.py)
        pars.add_argument("--start", default="photo", choices=START_CHOICES, help="start from")
        pars.add_argument("--add_strokes", type=int, default=8, help="new strokes beside mine")
        pars.add_argument("--refine_add", type=int, default=0, help="new strokes when refining")
        # Daemon
        pars.add_argument("--url", default=protocol.DEFAULT_URL)
        pars.add_argument("--token", default="")
        pars.add_argument(
            "--timeout", type=int, default=86400, help="longest wait in seconds, in any case"
        )
        pars.add_argument("--live_view", type=inkex.Boolean, default=True)
        pars.add_argument("--loss_model", default=protocol.DEFAULT_LOSS_MODEL)
        pars.add_argument("--saliency_model", default=protocol.DEFAULT_SALIENCY_MODEL)
        pars.add_argument("--poll_interval", type=float, default=1.0, help="seconds between polls")
        # Output
        pars.add_argument("--visible_level", default="most")
        pars.add_argument("--photo", default="keep", choices=("keep", "lock", "hide"))
        pars.add_argument("--clip", type=inkex.Boolean, default=True, help="strokes inside")
        pars.add_argument("--on_time_limit", default="keep", choices=("keep", "cancel"))

    def effect(self) -> None:
        if self.options.start != "photo":
            self._refine()
            return
        elements, others = split_selection(list(self.svg.selection.values()))
        if not elements:
            raise inkex.AbortExtension(
                SELECT_HINT
                if not others
                else f"None of the selected objects is an image. {SELECT_HINT}"
            )
        try:
            settings = self._settings(len(elements))
            levels = settings.levels
            visible_levels(levels, self.options.visible_level)
            sources = [
                read_image(element, self.options.input_file, os.environ.get("DOCUMENT_PATH"))
                for element in elements
            ]
            client = DaemonClient(self.options.url, self.options.token, REQUEST_TIMEOUT_S)
            keep = self.options.on_time_limit == "keep"
            # not waiting leaves the jobs running after we return: the daemon must keep them
            detached = keep or self.options.when != "wait"
            job_settings = [self._job_settings(settings, source) for source in sources]
            bodies = [
                protocol.build_job_request(source.data, chosen, source.name, detached=detached)
                for source, chosen in zip(sources, job_settings, strict=True)
            ]
            # a layer an earlier run inserted unfinished for the same photo and settings: its
            # job is waited for (not submitted again) and its layer updated (not doubled)
            earlier = [
                unfinished_layer(self.svg, source.element.get("id") or "", source.data, chosen)
                for source, chosen in zip(sources, job_settings, strict=True)
            ]
            resume = [None if layer is None else layer.get(ns("job")) for layer in earlier]
            outcomes = run_jobs(client, bodies, self._wait_options(keep), resume=resume)
            results = [
                outcome.result
                if outcome.result is not None
                else empty_result(outcome.job_id, chosen, self._pixels(source))
                for outcome, chosen, source in zip(outcomes, job_settings, sources, strict=True)
            ]
        except (protocol.ProtocolError, ValueError, ImageError, DaemonError) as exc:
            raise inkex.AbortExtension(str(exc)) from None
        self._insert(
            sources, outcomes, results, earlier, [display_name(element) for element in others]
        )
        # Inkscape 1.4 breaks relative links of documents under its temporary folder: see links.py
        anchor_relative_links(self.svg, self.options.input_file)

    def _refine(self) -> None:
        """Refine from my strokes: one job starting from the selected strokes, its result a
        new level layer beside theirs (refine.py); the document is untouched on any error."""
        keep = self.options.start == "keep"
        on_limit = self.options.on_time_limit == "keep"
        try:
            photo, elements, anchor = refine_selection(list(self.svg.selection.values()))
            source = read_image(photo, self.options.input_file, os.environ.get("DOCUMENT_PATH"))
            size = bitmap_size(source.data)
            if size is None or min(size) <= 0:
                raise ImageError(f"Image '{source.name}': its pixel size cannot be read")
            paths = import_strokes(place_image(photo, *size), elements)
            added = self.options.add_strokes if keep else self.options.refine_add
            chosen = self._job_settings(
                refine_settings(self._settings(1, (protocol.MAX_STROKES,)), paths, keep, added),
                source,
            )
            body = protocol.build_job_request(
                source.data, chosen, source.name, detached=on_limit or self.options.when != "wait"
            )
            earlier = unfinished_layer(self.svg, photo.get("id") or "", source.data, chosen)
            client = DaemonClient(self.options.url, self.options.token, REQUEST_TIMEOUT_S)
            resume = [None if earlier is None else earlier.get(ns("job"))]
            (outcome,) = run_jobs(client, [body], self._wait_options(on_limit), resume=resume)
            result = outcome.result or empty_result(outcome.job_id, chosen, size)
        except (protocol.ProtocolError, ValueError, ImageError, DaemonError) as exc:
            raise inkex.AbortExtension(str(exc)) from None
        taken = {str(value) for value in self.svg.xpath("//@id")}
        url = self.options.url.strip().rstrip("/")
        record = read_record(earlier) if earlier is not None else None
        try:
            if record is None:
                raise UpdateError("no earlier layer")
            # the same refinement left running by an earlier run: that layer is updated
            apply_result(self.svg, earlier, record, result, taken, url)
        except UpdateError:
            job = RefineJob(photo, tuple(paths), anchor, keep, image_digest(source.data))
            self._insert_refined(job, outcome, result, taken)
        if self.options.photo == "lock":
            photo.set("sodipodi:insensitive", "true")
        elif self.options.photo == "hide":
            photo.style["display"] = "none"
        anchor_relative_links(self.svg, self.options.input_file)

    def _insert_refined(
        self,
        job: RefineJob,
        outcome: JobOutcome,
        result: dict,
        taken: set[str],
    ) -> None:
        """A new refined level layer, just above the user's layer (on top when none)."""
        placement = place_image(job.photo, result["image"]["width"], result["image"]["height"])
        note = describe(
            outcome.estimate,
            outcome.waited_s,
            result.get("steps_run", result.get("step")),
            int(result["settings"]["iterations"]),
        )
        if result.get("partial"):
            note = f"{note} Inserted while the job was running. {UPDATE_HINT}"
        url = self.options.url.strip().rstrip("/")
        layer_options = LayerOptions(self._output_width(), "all", bool(self.options.clip), url)
        hide = job.anchor is not None and job.anchor.get(ns("strokes")) is not None
        if hide:
            note = f"{note} {SOURCE_HIDDEN}"
        layer, defs = build_refined_layer(job, placement, result, layer_options, taken, note)
        for definition in defs:
            self.svg.defs.append(definition)
        if job.anchor is not None:
            job.anchor.addnext(layer)
        else:
            self.svg.append(layer)
        if hide:
            # one level shows at a time, as Sketch inserts them: the refined one over its source
            job.anchor.style["display"] = "none"

    def _time_limit(self) -> float | None:
        """The user's time limit in seconds, None for no limit."""
        return float(self.options.time_limit) or None

    def _wait_options(self, keep: bool) -> WaitOptions:
        """The wait: the time limit plus a grace for loading and transfers (the engine spends
        the limit itself), never beyond the Daemon page's longest wait."""
        limit = self._time_limit()
        cap = float(self.options.timeout)
        if cap <= 0:
            raise ValueError(f"the longest wait must be more than 0 s, got {cap:g}")
        deadline = cap if limit is None else min(cap, limit + GRACE_S + GRACE_FRACTION * limit)
        shown = limit if limit is not None and deadline > limit else deadline
        return WaitOptions(
            deadline_s=deadline,
            keep_running=keep,
            limit_text=protocol.format_duration(shown),
            poll_interval=max(0.01, self.options.poll_interval),
            on_submitted=self._open_live_view if self.options.live_view else None,
            abandoned=output_closed,
            insert_now_beyond_s={"auto": AUTO_NOW_BEYOND_S, "now": 0.0}.get(self.options.when),
        )

    @staticmethod
    def _pixels(source: SourceImage) -> tuple[int, int]:
        """The bitmap's size from its header (for empty levels' clip), else the element's."""
        size = bitmap_size(source.data)
        if size is not None and min(size) > 0:
            return size
        try:
            return (
                max(1, round(float(source.element.get("width") or 1))),
                max(1, round(float(source.element.get("height") or 1))),
            )
        except ValueError:  # "3cm": the shape is what matters, and it is unknown
            return (1, 1)

    def _open_live_view(self, job_ids: list[str]) -> None:
        """Inkscape shows no progress: the daemon's page for the job does."""
        open_page(page_url(self.options.url, job_ids))

    def _settings(
        self, images: int, levels: tuple[int, ...] | None = None
    ) -> protocol.SketchSettings:
        """The dialog's values for ``images`` selected images, validated by the shared
        protocol (errors name the field); ``levels`` instead of the Levels field (refine
        makes its own level, so a Levels value it does not use cannot stop it)."""
        options = self.options
        return protocol.parse_settings(
            {
                "levels": levels or protocol.parse_levels(options.levels),
                "iterations": options.iterations,
                "seeds": options.seeds,
                "schedule": options.schedule,
                "precision": options.precision,
                "seed": options.seed,
                "color": colour_hex(options.color),
                "remove_background": bool(options.remove_background),
                "loss_model": options.loss_model.strip(),
                "saliency_model": options.saliency_model.strip(),
                "time_budget_s": self._budget(images),
            }
        )

    def _budget(self, images: int) -> float | None:
        """The engine's time budget per job: the time limit shared by the ``images`` selected
        (the daemon runs them one after the other), None for no limit."""
        limit = self._time_limit()
        if limit is None:
            return None
        return max(protocol.MIN_TIME_BUDGET_S, round(limit / images, 1))

    def _output_width(self) -> float | None:
        """The stroke width in root user units, or None for "as the reference"."""
        if self.options.width_mode != "document":
            return None
        if self.options.width <= 0:
            raise ValueError("the stroke width must be more than 0")
        unit = self.svg.document_unit
        return float(self.svg.viewport_to_unit(f"{self.options.width}{unit}"))

    def _job_settings(
        self, settings: protocol.SketchSettings, source: SourceImage
    ) -> protocol.SketchSettings:
        """``settings`` with the canvas stroke width that gives the chosen document width.

        The canvas holds the whole bitmap scaled to fit 224 px, so one canvas pixel is
        max(W, H) / 224 bitmap pixels; the bitmap's size comes from its header. When it cannot
        be read, the reference's width is used for the optimisation and the chosen width still
        applies to the output paths.
        """
        width = self._output_width()
        size = bitmap_size(source.data)
        if width is None or size is None or min(size) <= 0:
            return settings
        scale = place_image(source.element, *size).linear_scale
        if scale <= 0:
            return settings
        canvas = width / scale / (max(size) / protocol.CANVAS_SIZE)
        canvas = min(max(canvas, protocol.MIN_WIDTH), protocol.MAX_WIDTH)
        return protocol.parse_settings({**settings.to_json(), "width": round(canvas, 4)})

    def _insert(
        self,
        sources: list[SourceImage],
        outcomes: list[JobOutcome],
        results: list[dict],
        earlier: list[inkex.BaseElement | None],
        ignored: list[str],
    ) -> None:
        """Build every layer first, then add them all: a failure leaves the document alone.

        A source with an ``earlier`` unfinished layer of the same photo and settings gets that
        layer updated in place (layer_update: edited levels are kept) instead of a second one.
        ``ignored`` (selected objects that are not images) is recorded on each parent layer
        rather than reported, since any stderr output would open a dialog on success; so are
        the wait and the daemon's estimate.
        """
        taken = {str(value) for value in self.svg.xpath("//@id")}
        labels = [str(value) for value in self.svg.xpath("//@inkscape:label")]
        layer_options = LayerOptions(
            self._output_width(),
            self.options.visible_level,
            bool(self.options.clip),
            url=self.options.url.strip().rstrip("/"),
        )
        built = []
        for source, outcome, result, layer in zip(sources, outcomes, results, earlier, strict=True):
            record = read_record(layer) if layer is not None else None
            if record is not None:
                try:
                    apply_result(self.svg, layer, record, result, taken, layer_options.url)
                    continue
                except UpdateError:
                    pass  # a new layer then, as for any other run
            placement = place_image(
                source.element, result["image"]["width"], result["image"]["height"]
            )
            label = parent_label(source.name, labels)
            labels.append(label)
            note = describe(
                outcome.estimate,
                outcome.waited_s,
                result.get("steps_run", result.get("step")),
                int(result["settings"]["iterations"]),
            )
            if outcome.cached:
                note = f"The daemon had this sketch already. {note}"
            if result.get("partial"):
                note = f"{note} Inserted while the job was running. {UPDATE_HINT}"
            built.append(
                build_sketch_layer(
                    source.element,
                    label,
                    placement,
                    result,
                    layer_options,
                    taken,
                    note,
                    image_data=source.data,
                )
            )
        for layer, defs in built:
            if ignored:
                layer.set(ns("ignored"), ", ".join(ignored))
            for definition in defs:
                self.svg.defs.append(definition)
            self.svg.append(layer)
        for source in sources:
            if self.options.photo == "lock":
                source.element.set("sodipodi:insensitive", "true")
            elif self.options.photo == "hide":
                source.element.style["display"] = "none"


def main() -> None:
    """Run the effect on the command line Inkscape gives."""
    ClipassoSketch().run()


if __name__ == "__main__":
    main()
