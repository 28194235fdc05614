"""The dialog's Schedule choice (issue 22, 2a): "Quick" sends the fast schedule (seed pruning)
to the daemon, "Full" (the default) the reference's."""

from __future__ import annotations

import pytest
from ext_helpers import run_extension


@pytest.mark.parametrize(("chosen", "sent"), [((), "full"), (("--schedule=fast",), "fast")])
def test_the_schedule_chosen_is_the_schedule_sent(single_photo_svg, fake_daemon, chosen, sent):
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", *chosen)
    assert run.status == 0, run.stderr
    (settings,) = fake_daemon.submitted_settings()
    assert settings.schedule == sent


def test_an_unknown_schedule_is_refused_in_one_line(single_photo_svg, fake_daemon):
    run = run_extension(
        single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--schedule=turbo"
    )
    assert run.status != 0
    assert "--schedule" in run.stderr and "turbo" in run.stderr
    assert fake_daemon.submitted_settings() == []
