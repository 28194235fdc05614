""" "Could not reach the daemon" names the command that works: the `clipasso` recorded when the
extension was installed (often a venv's, not on PATH), else plain `clipasso serve`."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

from ext_helpers import data_uri, make_png, svg_doc

from inkscape_clipasso import daemon_command


def install(profile) -> object:
    from clipasso_server.commands import install_extension

    parser = argparse.ArgumentParser()
    install_extension.add_arguments(parser)
    install_extension.run(parser.parse_args(["--profile-dir", str(profile)]))
    return profile / "extensions" / "clipasso"


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_installed(target, tmp_path) -> subprocess.CompletedProcess:
    """The installed copy, run as Inkscape runs it (its own folder, a fresh process)."""
    document = tmp_path / "in.svg"
    png = data_uri(make_png(4, 4))
    document.write_text(svg_doc(f'<image id="img1" width="4" height="4" xlink:href="{png}"/>'))
    script = target / "inkscape_clipasso" / "clipasso_sketch.py"
    env = dict(os.environ, DOCUMENT_PATH=str(document))
    return subprocess.run(
        [sys.executable, str(script), "--id=img1", f"--url={dead_url()}", str(document)],
        capture_output=True,
        text=True,
        cwd=target,
        env=env,
        timeout=600,  # only catches a hang
        check=False,
    )


def test_install_records_the_program_next_to_its_python(tmp_path, capsys):
    target = install(tmp_path)
    capsys.readouterr()
    program = daemon_command.find_program()
    record = target / daemon_command.RECORD_NAME
    if program is None:
        assert not record.exists()
    else:
        assert json.loads(record.read_text()) == {"program": program}
        assert os.path.isabs(program)


def test_unreachable_daemon_names_the_recorded_command(tmp_path, capsys):
    target = install(tmp_path)
    capsys.readouterr()
    program = tmp_path / "my venv" / "bin" / "clipasso"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    daemon_command.write_record(target, str(program))
    done = run_installed(target, tmp_path)
    assert done.returncode != 0 and done.stdout == ""
    assert "Could not reach the CLIPasso daemon" in done.stderr
    assert f"Start it in a terminal with:  '{program}' serve" in done.stderr, done.stderr


def test_without_a_record_it_says_clipasso_serve(tmp_path, capsys):
    target = install(tmp_path)
    capsys.readouterr()
    (target / daemon_command.RECORD_NAME).unlink(missing_ok=True)
    done = run_installed(target, tmp_path)
    assert "Start it in a terminal with:  clipasso serve\n" in done.stderr, done.stderr


def test_a_record_of_a_program_gone_falls_back(tmp_path):
    daemon_command.write_record(tmp_path, str(tmp_path / "gone" / "clipasso"))
    assert daemon_command.serve_command(str(tmp_path)) == "clipasso serve"
