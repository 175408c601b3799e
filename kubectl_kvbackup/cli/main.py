"""Entry point of ``kubectl-kvbackup``: parse, run one subcommand, turn every failure into one clear line."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

import argcomplete

from .. import __version__
from ..cluster import KubeError
from ..freeze import Terminated
from ..selectors import SelectorError
from . import bundles, export, freeze, graph, restore, webhook
from .completion import complete

INTERRUPTED = "no bundle was written; guests this command froze were thawed unless an error above says otherwise"
SUBCOMMANDS = (graph, export, bundles, freeze, restore, webhook)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # kubectl's wording, and usage errors exit 2
        self.exit(2, f"error: {message}\nSee '{self.prog} --help' for usage.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubectl kvbackup",
                     description="Back up and restore KubeVirt virtual machines safely, with any tool.")
    parser.add_argument("--version", action="version", version=f"kubectl-kvbackup {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.register(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    verbosity = getattr(args, "verbosity", 0)
    logging.basicConfig(level=logging.DEBUG if verbosity >= 6 else logging.WARNING, stream=sys.stderr,
                        format="%(message)s")
    try:
        return args.run(args)
    except KubeError as error:
        print(error, file=sys.stderr)
        return error.exit_code
    except SelectorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {INTERRUPTED}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"terminated: {INTERRUPTED}", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug of ours: one line unless the user asked for detail
        if verbosity >= 9:
            traceback.print_exc()
        print(f"error: unexpected {type(error).__name__}: {error} (rerun with -v=9 for details, and please report it)",
              file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())


def run_completion() -> None:
    """``kubectl_complete-kvbackup``: what kubectl runs to complete ``kubectl kvbackup ...``."""
    sys.exit(complete(build_parser(), sys.argv[1:]))
