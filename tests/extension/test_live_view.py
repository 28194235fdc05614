"""The live view: the job's page opens in the browser, and the browser's chatter never reaches
Inkscape (stdout carries the document, a stderr line opens a dialog).

The effect runs as a real process, as Inkscape runs it, with BROWSER pointing at a script that
records the address it was given and then prints on both streams, as some browsers do.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ext_helpers import REPO, data_uri, make_png, svg_doc
from lxml import etree

SCRIPT = REPO / "inkscape_clipasso" / "clipasso_sketch.py"


def browser_script(tmp_path):
    record = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> "{record}"\n'
        'echo "Opening in existing browser session."\n'
        'echo "Gtk-WARNING: cannot open display" >&2\n'
    )
    script.chmod(0o755)
    return script, record


def run_script(tmp_path, fake, browser, *args: str) -> subprocess.CompletedProcess:
    document = tmp_path / "in.svg"
    document.write_text(
        svg_doc(f'<image id="img1" width="8" height="8" xlink:href="{data_uri(make_png(8, 8))}"/>')
    )
    env = dict(os.environ, BROWSER=str(browser), DOCUMENT_PATH=str(document))
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--id=img1",
            f"--url={fake.url}",
            "--levels=2",
            *args,
            str(document),
        ],
        capture_output=True,
        env=env,
        timeout=600,  # only catches a hang
        check=False,
    )


def test_the_job_page_opens_quietly(tmp_path, fake_daemon):
    browser, record = browser_script(tmp_path)
    done = run_script(tmp_path, fake_daemon, browser)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    root = etree.fromstring(done.stdout)  # the document only, nothing of the browser's
    assert root.tag.endswith("svg")
    (job_id,) = fake_daemon.jobs
    assert record.read_text().split() == [f"{fake_daemon.url}/jobs/{job_id}"]


def test_the_option_off_opens_nothing(tmp_path, fake_daemon):
    browser, record = browser_script(tmp_path)
    done = run_script(tmp_path, fake_daemon, browser, "--live_view=false")
    assert done.returncode == 0 and done.stderr == b""
    assert not record.exists()


def test_no_browser_at_all_is_not_an_error(tmp_path, fake_daemon):
    done = run_script(tmp_path, fake_daemon, tmp_path / "no-such-browser")
    assert done.returncode == 0 and done.stderr == b""
