"""The reference's defaults, pinned in one place: a changed constant must be a decision."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from clipasso_server.engine import augment, losses
from clipasso_server.engine.optimise import LoopSettings
from clipasso_server.engine.start import START_TEMPERATURE
from clipasso_server.engine.types import SketchConfig
from inkscape_clipasso import protocol


def test_reference_defaults_and_protocol_bounds():
    config = SketchConfig()
    # the method (method.md, "Reference defaults")
    assert START_TEMPERATURE == 0.3
    assert (augment.DISTORTION, augment.CROP_AREA) == (0.5, 0.8)
    assert (config.augmentations, config.learning_rate, config.eval_every) == (4, 1.0, 10)
    assert (config.iterations, config.seeds, config.width, config.canvas) == (2000, 3, 3.0, 224)
    assert config.levels == (4, 8, 16, 32)
    assert (config.loss_model, config.saliency_model) == ("RN101", "ViT-B-32")
    assert config.plateau_patience is None and config.time_budget_s is None
    assert (losses.GEOMETRIC_WEIGHTS, losses.SEMANTIC_WEIGHT) == ((1.0, 1.0), 0.1)
    loop = LoopSettings(iterations=config.iterations)
    assert (loop.eval_every, loop.augmentations, loop.learning_rate) == (10, 4, 1.0)
    assert loop.plateau_patience is None
    # the protocol's defaults are the engine's, field for field
    assert config.settings_json() == protocol.SketchSettings().to_json()
    # every protocol bound, lower and upper (tests/test_protocol.py checks they are enforced)
    assert (protocol.MIN_STROKES, protocol.MAX_STROKES, protocol.MAX_LEVELS) == (1, 256, 8)
    assert (protocol.MIN_ITERATIONS, protocol.MAX_ITERATIONS) == (1, 20000)
    assert (protocol.MIN_SEEDS, protocol.MAX_SEEDS) == (1, 16)
    assert (protocol.MIN_WIDTH, protocol.MAX_WIDTH) == (0.1, 50.0)
    assert protocol.MAX_SEED_VALUE == 2**31 - 1
    assert (protocol.MIN_TIME_BUDGET_S, protocol.MAX_TIME_BUDGET_S) == (1.0, 7 * 86400.0)
    assert protocol.STOP_REASONS == ("iterations", "plateau", "budget", "cancel")
    assert set(dataclasses.asdict(protocol.SketchSettings())) <= {
        f.name for f in dataclasses.fields(SketchConfig)
    }
