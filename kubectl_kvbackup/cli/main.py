"""Entry point of ``kubectl-kvbackup``: parse, run one subcommand, turn every failure into one clear line.

Verbs are registered by modules of this package (``VERBS``), each imported only when its verb is parsed: ``--help``
lists the verbs from ``VERBS`` alone, and a command or a TAB completion loads the one module it names. A module's top
level imports nothing heavy (the ``kubernetes`` client, ``cryptography``): its run functions do. That keeps ``--help``
and TAB completion instant; tests/test_cli_startup.py checks it for every verb.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, MutableMapping
from importlib import import_module

#: each verb: the module of this package that registers it (``register(subcommands)``, which adds the verb's parser
#: without a ``help``), and the verb's line in ``--help``
VERBS: dict[str, tuple[str, str]] = {
    "graph": ("graph", "show the object graph of VMs, VMIs, VMI replica sets and VM pools"),
    "export": ("export", "write a verifiable bundle of VMs and everything they need"),
    "verify": ("bundles", "check a bundle's files against its index"),
    "inspect": ("bundles", "show a bundle's graph, restore decisions and freeze report"),
    "freeze": ("freeze", "freeze guest filesystems (for backup hooks)"),
    "thaw": ("freeze", "thaw guest filesystems frozen by freeze"),
    "restore": ("restore", "restore a bundle into a cluster, volumes included"),
    "adopt": ("restore", "re-point set-aside owners of restored objects whose owners exist now"),
    "webhook": ("webhook", "install, uninstall or render the restore-rules admission webhook"),
    "completion": ("completion", "print the shell completion script (bash, zsh or fish)"),
    "version": ("version", "print the plugin, bundle format and Python versions"),
}
COMPLETION_EXECUTABLE = "kubectl_complete-kvbackup"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # kubectl's wording, and usage errors exit 2
        self.exit(2, f"error: {message}\n{help_pointer(self.prog)}\n")


def unrecognized_message(arguments: list[str]) -> str:
    """kubectl's ``unknown flag: --x`` for the first unknown flag, else argparse's list of extra arguments."""
    before_end = arguments[:arguments.index("--")] if "--" in arguments else arguments
    flag = next((a for a in before_end if a.startswith("-") and a != "-" and not a[1:2].isdigit()), None)
    return f"unknown flag: {flag.split('=', 1)[0]}" if flag else f"unrecognized arguments: {' '.join(arguments)}"


def help_pointer(prog: str) -> str:
    return f"See '{prog} --help' for usage."


def _remember_prog(parser: argparse.ArgumentParser) -> None:
    """Each verb's parser records its own name, so a usage error found after parsing points at the verb's help."""
    parser.set_defaults(help_prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _remember_prog(child)


class _VerbParsers(MutableMapping):
    """The verbs' parsers by name, as argparse keeps them for a subcommand action: every verb of ``VERBS`` is in it
    from the start, and its parser is built (its module imported and registered) the first time it is looked up."""

    def __init__(self, subcommands: argparse._SubParsersAction):
        self._subcommands = subcommands
        self._parsers: dict[str, argparse.ArgumentParser] = {}
        self._registering = False

    def __getitem__(self, verb: str) -> argparse.ArgumentParser:
        if verb not in self._parsers and verb in VERBS:
            self._registering = True  # argparse (3.11+) refuses to add a parser for a name already "in" the map
            try:
                import_module(f"{__package__}.{VERBS[verb][0]}").register(self._subcommands)
            finally:
                self._registering = False
            for parser in self._parsers.values():
                _remember_prog(parser)
        return self._parsers[verb]

    def __setitem__(self, verb: str, parser: argparse.ArgumentParser) -> None:
        self._parsers[verb] = parser

    def __delitem__(self, verb: str) -> None:
        del self._parsers[verb]

    def __contains__(self, verb: object) -> bool:
        return verb in (self._parsers if self._registering else VERBS)

    def __iter__(self) -> Iterator[str]:
        return iter(VERBS)

    def __len__(self) -> int:
        return len(VERBS)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="kubectl kvbackup",
                     description="Back up and restore KubeVirt virtual machines safely, with any tool.",
                     epilog="Run 'kubectl kvbackup COMMAND --help' for a command's flags and examples.")
    parser.add_argument("--version", action="version", version=f"kubectl-kvbackup v{__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    subcommands._name_parser_map = subcommands.choices = _VerbParsers(subcommands)
    subcommands._choices_actions.extend(subcommands._ChoicesPseudoAction(verb, (), text)
                                        for verb, (_, text) in VERBS.items())
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for candidates (argcomplete's protocol); exits when done
        from .completion import argcomplete_hook

        argcomplete_hook(parser)
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # argparse would blame the top-level parser; the verb's help is where the flags are
        _Parser(prog=getattr(args, "help_prog", parser.prog)).error(unrecognized_message(unrecognized))
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    # imported after parsing: --help and usage errors never load them
    from ..cluster import KubeError, configure_logging
    from ..freeze import Terminated
    from ..selectors import SelectorError
    from .common import UsageError

    verbosity = getattr(args, "verbosity", 0)
    configure_logging(verbosity)
    try:
        return args.run(args)
    except (UsageError, SelectorError) as error:
        print(f"{_one_error_line(error)}\n{help_pointer(args.help_prog)}", file=sys.stderr)
        return 2
    except KubeError as error:
        print(_one_error_line(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"error: interrupted{_what_stays(args)}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"error: terminated{_what_stays(args)}", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug of ours: one line unless the user asked for detail
        if verbosity >= 9:
            import traceback

            traceback.print_exc()
        print(f"error: unexpected {type(error).__name__}: {error} (rerun with -v=9 for details, and please report it)",
              file=sys.stderr)
        return 1


def _what_stays(args: argparse.Namespace) -> str:
    """What an interrupted verb leaves behind, as the verb says it (``set_defaults(after_interrupt=...)``)."""
    text = getattr(args, "after_interrupt", "")
    return f": {text}" if text else ""


def _one_error_line(error: Exception) -> str:
    """``error: ...``; the API server's refusals keep kubectl's own ``Error from server (Reason): ...`` form."""
    text = "; ".join(line for line in str(error).splitlines() if line.strip())
    return text if text.startswith(("error: ", "Error from server")) else f"error: {text}"


def run() -> None:
    """``kubectl-kvbackup``; the same file linked as ``kubectl_complete-kvbackup`` (as the krew archive's single
    executable must be) answers kubectl's completion requests."""
    if os.path.basename(sys.argv[0]) == COMPLETION_EXECUTABLE:
        run_completion()
    sys.exit(main())


def run_completion() -> None:
    """``kubectl_complete-kvbackup``: what kubectl (1.26+) runs to complete ``kubectl kvbackup ...``."""
    from .completion import complete

    sys.exit(complete(build_parser(), sys.argv[1:]))
