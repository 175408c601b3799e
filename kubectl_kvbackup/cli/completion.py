"""Shell completion for ``kubectl kvbackup``.

kubectl (1.26+) completes plugin arguments by running ``kubectl_complete-kvbackup __complete ARGS... PARTIAL``
and reading cobra's protocol: one candidate per line, then ``:<directive>``. Candidates come from the same
argparse parser that parses the command, so they cannot drift from it.
"""

from __future__ import annotations

import argparse
import sys

from .. import kinds

NO_FILE_COMPLETION = 4  # cobra's ShellCompDirectiveNoFileComp
DEFAULT = 0  # let the shell complete file names (after -f, --to, --kubeconfig)
FILE_FLAGS = ("-f", "--filename", "--kubeconfig", "--to", "--encrypt-key-file")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], int]:
    """Completions for the last word of ``words`` (possibly empty) and the cobra directive."""
    *done, partial = words or [""]
    current = parser
    for word in done:
        current = _subcommands(current).get(word, current)
    if done and done[-1] in FILE_FLAGS:
        return [], DEFAULT
    flag = next((a for a in current._actions if done and done[-1] in a.option_strings and a.nargs != 0), None)
    if flag is not None:
        return sorted(str(c) for c in flag.choices or () if str(c).startswith(partial)), NO_FILE_COMPLETION
    commands = _subcommands(current)
    if commands:
        return sorted(c for c in commands if c.startswith(partial)), NO_FILE_COMPLETION
    if partial.startswith("-"):
        flags = sorted(o for a in current._actions for o in a.option_strings if o.startswith(partial))
        return flags, NO_FILE_COMPLETION
    types = sorted({k.short_names[0] + "/" for k in kinds.ROOT_KINDS})
    return [t for t in types if t.startswith(partial)], NO_FILE_COMPLETION


def complete(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    words = argv[1:] if argv and argv[0] in ("__complete", "__completeNoDesc") else argv
    found, directive = candidates(parser, words)
    for candidate in found:
        sys.stdout.write(candidate + "\n")
    sys.stdout.write(f":{directive}\n")
    return 0
