"""The ``clipasso`` command: sketch, serve, install-extension, make-test-weights."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from clipasso_server import __version__
from clipasso_server.engine.errors import EngineError

#: subcommand -> (module under clipasso_server.commands, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sketch": ("sketch", "sketch an image into a layered SVG (one layer per abstraction level)"),
    "serve": ("serve", "run the local sketch daemon that the Inkscape extension talks to"),
    "install-extension": (
        "install_extension",
        "install the Inkscape extension into your Inkscape profile, or build its zip",
    ),
    "make-test-weights": (
        "make_test_weights",
        "write the weights of the tiny random test models (for tests and smoke checks)",
    ),
}


class CommandError(Exception):
    """A subcommand's user-facing failure: printed as one line, exit status 2."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says it.

    argparse's ArgumentDefaultsHelpFormatter also prints "(default: None)" and "(default:
    False)", which say nothing: options without a value of their own describe it in words.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text.lower()
            or action.default is None
            or action.default is False
            or action.default == []
            or action.default == argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand's arguments."""
    parser = argparse.ArgumentParser(
        prog="clipasso",
        description="CLIPasso line sketches of photos, as editable Inkscape layers.",
    )
    parser.add_argument("--version", action="version", version=f"clipasso {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(f"clipasso_server.commands.{module_name}")
        sub_parser = sub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=DefaultsHelpFormatter,
        )
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (CommandError, EngineError) as exc:
        print(f"clipasso {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipasso {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the imported module, so that subcommands and this entry point share one
    # CommandError class (as ``__main__`` this file would define a second one).
    from clipasso_server.cli import main as package_main

    sys.exit(package_main())
