"""What clients are told names no server path: the missing-weights refusal keeps its advice
and download addresses but not the folders searched (those go to the daemon's log)."""

from __future__ import annotations

import logging

from daemon_helpers import assert_error, job_body

from inkscape_clipasso import protocol


def test_missing_weights_names_no_server_path(start_daemon, test_weights_dir, caplog):
    client, _ = start_daemon()
    body = job_body()
    body["settings"]["loss_model"] = protocol.DEFAULT_LOSS_MODEL  # not among the test weights
    with caplog.at_level(logging.INFO, logger="clipasso.daemon"):
        status, answer = client.post_json("/v1/jobs", body)
    assert_error(status, answer, "missing_weights")
    message = answer["message"]
    assert str(test_weights_dir) not in message and "/root" not in message, message
    assert "<path>" in message and "--clip-weights" in message, message
    assert "https://" in message  # the download address is kept whole
    assert any(str(test_weights_dir) in r.getMessage() for r in caplog.records)
