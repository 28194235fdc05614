"""Placeholder: this subcommand arrives with its issue."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments yet."""


def run(args: argparse.Namespace) -> int:
    """Not implemented yet."""
    from clipasso_server.cli import CommandError

    raise CommandError("not implemented yet")
