"""The dialog's Arithmetic choice (issue 22): the loss model's arithmetic chosen is the one sent
to the daemon ("auto" by default), an unknown one is refused before anything is sent, and the
arithmetic that ran (the result's ``models.loss_arithmetic``) is recorded on the sketch layer."""

from __future__ import annotations

import json

import pytest
from ext_helpers import CLIPASSO, SVG, by_id, run_extension
from lxml import etree
from test_update_sketches import run_update, sketch_now


@pytest.fixture
def running(fake_daemon):
    """A daemon whose jobs go on until finish_all (the layers are inserted unfinished)."""
    fake_daemon.polls_before_done = -1
    return fake_daemon


@pytest.mark.parametrize(
    ("chosen", "sent"),
    [((), "auto"), (("--precision=fp32",), "fp32"), (("--precision=bf16",), "bf16")],
)
def test_the_precision_chosen_is_the_precision_sent(single_photo_svg, fake_daemon, chosen, sent):
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", *chosen)
    assert run.status == 0, run.stderr
    (settings,) = fake_daemon.submitted_settings()
    assert settings.precision == sent
    # and recorded with the layer's settings (what Update sketches and a new run compare)
    recorded = json.loads(by_id(run.svg, "clipasso-img1").get(CLIPASSO + "settings"))
    assert recorded["precision"] == sent


def test_an_unknown_precision_is_refused_in_one_line(single_photo_svg, fake_daemon):
    run = run_extension(
        single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--precision=fp16"
    )
    assert run.status != 0
    assert "--precision" in run.stderr and "fp16" in run.stderr
    assert run.output == b""  # the document untouched
    assert fake_daemon.submitted_settings() == []


def test_the_arithmetic_that_ran_is_recorded_with_the_models(single_photo_svg, fake_daemon):
    def with_arithmetic(result):
        return {**result, "models": {**result["models"], "loss_arithmetic": "bfloat16 autocast"}}

    fake_daemon.result_override = with_arithmetic
    run = run_extension(
        single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--precision=bf16"
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    models = json.loads(by_id(run.svg, "clipasso-img1").get(CLIPASSO + "models"))
    assert models == {
        "loss": "RN101",
        "saliency": "ViT-B-32",
        "loss_arithmetic": "bfloat16 autocast",
    }


# Update sketches and a new Sketch run compare a layer's recorded settings with the job's.


def _forget_precision(document) -> None:
    """Make the layer's record one from before the precision setting existed."""
    root = etree.parse(str(document)).getroot()
    parent = by_id(root, "clipasso-img1")
    settings = json.loads(parent.get(CLIPASSO + "settings"))
    del settings["precision"]
    parent.set(CLIPASSO + "settings", json.dumps(settings, sort_keys=True))
    document.write_bytes(etree.tostring(root))


def test_a_recorded_precision_stays_with_its_job_through_an_update(tmp_path, running):
    document = sketch_now(tmp_path, running, "--precision=fp32")
    (settings,) = running.submitted_settings()
    assert settings.precision == "fp32"
    running.finish_all()
    run = run_update(document)
    assert run.status == 0 and run.stderr == "", run.stderr
    parent = by_id(run.svg, "clipasso-img1")
    assert parent.get(CLIPASSO + "state") == "done"
    assert json.loads(parent.get(CLIPASSO + "settings"))["precision"] == "fp32"
    assert len(by_id(run.svg, "clipasso-img1-level-3").findall(SVG + "path")) == 3


def test_a_layer_recorded_before_precision_existed_still_updates(tmp_path, running):
    """Its job ran at the default ("auto"), which is what a record without it means."""
    document = sketch_now(tmp_path, running)
    _forget_precision(document)
    running.finish_all()
    run = run_update(document)
    assert run.status == 0 and run.stderr == "", run.stderr
    assert by_id(run.svg, "clipasso-img1").get(CLIPASSO + "state") == "done"
    assert len(by_id(run.svg, "clipasso-img1-level-3").findall(SVG + "path")) == 3


@pytest.mark.parametrize(("chosen", "new_job"), [((), False), (("--precision=fp32",), True)])
def test_sketch_again_on_a_layer_recorded_before_precision(tmp_path, running, chosen, new_job):
    """The same sketch at Auto takes the old layer over (its job, not a new one); another
    arithmetic is other work: a new job and a layer of its own."""
    document = sketch_now(tmp_path, running)
    _forget_precision(document)
    running.requests.clear()
    again = run_extension(
        document, "--id=img1", f"--url={running.url}", "--levels=2,3", "--when=now", *chosen
    )
    assert again.status == 0 and again.stderr == "", again.stderr
    assert any(request.method == "POST" for request in running.requests) == new_job
    sketches = again.svg.xpath(
        "//svg:g[starts-with(@id, 'clipasso-img1') and @clipasso:job]",
        namespaces={"svg": SVG[1:-1], "clipasso": CLIPASSO[1:-1]},
    )
    assert len(sketches) == (2 if new_job else 1)
