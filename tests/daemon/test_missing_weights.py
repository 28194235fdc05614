"""Weights the daemon cannot get: named all at once at start-up and at submission (503)."""

from __future__ import annotations

import logging

from daemon_helpers import assert_error, job_body


def test_a_job_whose_weights_are_missing_is_refused_naming_every_file(start_daemon):
    client, daemon = start_daemon()
    body = job_body(loss_model="RN101", saliency_model="ViT-B-32")
    status, answer = client.post_json("/v1/jobs", body)
    assert_error(status, answer, "missing_weights")
    message = answer["message"]
    for name in ("RN101", "ViT-B-32", "RN101.pt", "ViT-B-32.pt"):
        assert name in message, message
    assert "https://" in message  # where to download them from
    assert daemon.queue.queue_length() == 0  # nothing was queued to fail later


def test_the_background_model_is_checked_when_asked_for(start_daemon):
    client, _ = start_daemon()
    status, answer = client.post_json("/v1/jobs", job_body(remove_background=True))
    assert_error(status, answer, "missing_weights")
    assert "deeplabv3" in answer["message"].lower(), answer["message"]


def test_a_job_whose_weights_are_there_is_accepted(start_daemon):
    client, _ = start_daemon()
    status, answer = client.post_json("/v1/jobs", job_body())
    assert status == 202, answer


def test_start_up_warns_once_listing_every_missing_default_model(start_daemon, caplog):
    caplog.set_level(logging.INFO, logger="clipasso.daemon")
    start_daemon()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "RN101" in warnings[0] and "ViT-B-32" in warnings[0], warnings[0]
