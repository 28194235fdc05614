"""The dialog's Schedule choice (issue 22, 2a): "Quick" sends the fast schedule (seed pruning)
to the daemon, "Full" (the default) the reference's."""

from __future__ import annotations

import pytest
from ext_helpers import data_uri, make_png, run_extension, svg_doc


@pytest.fixture
def photo_svg(tmp_path):
    path = tmp_path / "in.svg"
    path.write_text(
        svg_doc(f'<image id="img1" width="8" height="8" xlink:href="{data_uri(make_png(8, 8))}"/>')
    )
    return path


@pytest.mark.parametrize(("chosen", "sent"), [((), "full"), (("--schedule=fast",), "fast")])
def test_the_schedule_chosen_is_the_schedule_sent(photo_svg, fake_daemon, chosen, sent):
    run = run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", *chosen)
    assert run.status == 0, run.stderr
    (settings,) = fake_daemon.submitted_settings()
    assert settings.schedule == sent


def test_an_unknown_schedule_is_refused_in_one_line(photo_svg, fake_daemon):
    run = run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--schedule=turbo")
    assert run.status != 0
    assert "--schedule" in run.stderr and "turbo" in run.stderr
    assert fake_daemon.submitted_settings() == []
