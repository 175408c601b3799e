"""Shell completion for ``kubectl kvbackup``, in both protocols that can ask for it.

- ``kubectl kvbackup <TAB>`` (kubectl 1.26+): kubectl runs ``kubectl_complete-kvbackup ARGS... PARTIAL`` and reads
  one candidate per line, then ``:<directive>`` (cobra's ShellCompDirective), as kubectl's
  pkg/cmd/plugin/plugin_completion.go (getPluginCompletions) parses it. Its stderr reaches the user's terminal, so
  nothing is ever printed there.
- ``kubectl-kvbackup <TAB>``: argcomplete's environment protocol, set up by ``kubectl kvbackup completion SHELL``.

Both ask the same completers, attached to the arguments of the parser that parses the command, so candidates cannot
drift from what the command accepts. Completers that ask the cluster use a short timeout and answer nothing when it
does not answer. This module is imported to build the parser: it imports nothing heavy at its top.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from .. import kinds

# cobra's ShellCompDirective bits (spf13/cobra completions.go)
DEFAULT = 0  # the shell completes file names when no candidate is given
NO_SPACE = 2
NO_FILE_COMPLETION = 4
FILTER_FILE_EXT = 8
LOOKUP_TIMEOUT = 2.0  # seconds a TAB may wait for the cluster
SHELLS = ("bash", "zsh", "fish")


class Completer:
    """Candidates for one argument: callable as an argcomplete completer, ``cobra`` for kubectl's protocol."""

    directive = NO_FILE_COMPLETION

    def candidates(self, prefix: str, args: argparse.Namespace) -> list[str]:
        raise NotImplementedError

    def cobra(self, prefix: str, args: argparse.Namespace) -> tuple[list[str], int]:
        found = self.candidates(prefix, args)
        no_space = NO_SPACE if found and all(c.endswith(("/", "=")) for c in found) else 0
        return found, self.directive | no_space

    def __call__(self, prefix: str, parsed_args: argparse.Namespace | None = None, **_: Any) -> list[str]:
        return self.candidates(prefix, parsed_args or argparse.Namespace())


class FileCompleter(Completer):
    """Directories, and files (those ending in one of ``extensions`` when given)."""

    def __init__(self, extensions: tuple[str, ...] = ()):
        self.extensions = extensions

    def candidates(self, prefix: str, args: argparse.Namespace) -> list[str]:
        folder, start = os.path.split(prefix)
        try:
            entries = sorted(os.scandir(os.path.expanduser(folder) or "."), key=lambda e: e.name)
        except OSError:
            return []
        found = []
        for entry in entries:
            if not entry.name.startswith(start) or (entry.name.startswith(".") and not start.startswith(".")):
                continue
            if entry.is_dir():
                found.append(os.path.join(folder, entry.name) + "/")
            elif not self.extensions or entry.name.endswith(self.extensions):
                found.append(os.path.join(folder, entry.name))
        return found

    def cobra(self, prefix: str, args: argparse.Namespace) -> tuple[list[str], int]:
        # the shell completes paths itself (~, quoting, its own colours); cobra passes extensions without the dot
        if self.extensions:
            return [e.lstrip(".") for e in self.extensions], FILTER_FILE_EXT
        return [], DEFAULT


class KubeconfigCompleter(Completer):
    """Names of the kubeconfig's contexts, clusters or users: read from the files, no server asked."""

    def __init__(self, section: str):
        self.section = section

    def candidates(self, prefix: str, args: argparse.Namespace) -> list[str]:
        from ..cluster import ConnectionOptions, read_kubeconfig

        try:
            merged = read_kubeconfig(ConnectionOptions(kubeconfig=getattr(args, "kubeconfig", None)))
        except Exception:  # a TAB never shows an error
            return []
        return sorted(n for n in (e.get("name") for e in merged[self.section]) if isinstance(n, str)
                      and n.startswith(prefix))


def _connection(args: argparse.Namespace):
    from ..cluster import ConnectionOptions, connect

    return connect(ConnectionOptions(kubeconfig=getattr(args, "kubeconfig", None),
                                     context=getattr(args, "context", None), cluster=getattr(args, "cluster", None),
                                     user=getattr(args, "user", None), namespace=getattr(args, "namespace", None),
                                     request_timeout=LOOKUP_TIMEOUT))


def _names_in_cluster(args: argparse.Namespace, kind: kinds.Kind, namespaced: bool) -> list[str]:
    from ..cluster import collection_path

    connection = _connection(args)
    path = collection_path(kind, kind.version, connection.namespace if namespaced else None)
    reply = connection.request("GET", path, [("limit", 500)])  # one page is plenty for a TAB
    return [item["metadata"]["name"] for item in reply.get("items") or []]


def _names_in_manifests(args: argparse.Namespace, kind: kinds.Kind) -> list[str]:
    from ..cluster import ConnectionOptions, default_namespace
    from ..sources import load_manifests

    namespace = default_namespace(ConnectionOptions(kubeconfig=getattr(args, "kubeconfig", None),
                                                    context=getattr(args, "context", None),
                                                    namespace=getattr(args, "namespace", None)))
    paths = [p for p in args.filename if p != "-"]
    return [o["metadata"]["name"] for o in load_manifests(paths, namespace)
            if (kinds.group_of(o["apiVersion"]), o["kind"]) == (kind.group, kind.kind)
            and o["metadata"].get("namespace") == namespace]


def names_of(args: argparse.Namespace, kind: kinds.Kind) -> list[str]:
    """Names of ``kind`` where the command would look: the -f manifests, else the cluster; nothing on any error."""
    try:
        if getattr(args, "filename", None):
            return sorted(set(_names_in_manifests(args, kind)))
        return sorted(set(_names_in_cluster(args, kind, namespaced=True)))
    except Exception:  # unreachable, forbidden, malformed: a TAB never shows an error
        return []


class NamespaceCompleter(Completer):
    def candidates(self, prefix: str, args: argparse.Namespace) -> list[str]:
        try:
            found = _names_in_cluster(args, kinds.NAMESPACE, namespaced=False)
        except Exception:  # a TAB never shows an error
            return []
        return sorted(n for n in found if n.startswith(prefix))


class TargetCompleter(Completer):
    """``TYPE/NAME``: first the types (``vm/``, no space after it), then the names of that type."""

    def __init__(self, accepted: tuple[kinds.Kind, ...]):
        self.accepted = accepted

    def _kind(self, text: str) -> kinds.Kind | None:
        try:
            return kinds.resolve_type(text, self.accepted)
        except kinds.UnknownKindError:
            return None

    def candidates(self, prefix: str, args: argparse.Namespace) -> list[str]:
        if "/" in prefix:
            type_text, _, start = prefix.partition("/")
            kind = self._kind(type_text)
            return [f"{type_text}/{n}" for n in names_of(args, kind) if n.startswith(start)] if kind else []
        given = [t for t in getattr(args, "targets", None) or [] if t]
        if given and "/" not in given[0]:  # kubectl's other form: TYPE NAME NAME...
            kind = self._kind(given[0])
            return [n for n in names_of(args, kind) if n.startswith(prefix) and n not in given] if kind else []
        return sorted(t for t in (k.short_names[0] + "/" for k in self.accepted) if t.startswith(prefix))


complete_files = FileCompleter()
complete_bundles = FileCompleter((".tar.gz", ".tgz"))
complete_contexts = KubeconfigCompleter("contexts")
complete_clusters = KubeconfigCompleter("clusters")
complete_users = KubeconfigCompleter("users")
complete_namespaces = NamespaceCompleter()


# ---- kubectl's protocol: find the argument the last word belongs to, without running the parser's checks ----

def _subcommands(parser: argparse.ArgumentParser) -> Mapping[str, argparse.ArgumentParser]:
    """The subcommands' parsers by name; a verb's parser is built only when it is looked up (see cli/main.py)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    return next((a for a in parser._actions if word in a.option_strings), None)


def _read_words(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser,
                                                                            argparse.Namespace, argparse.Action | None]:
    """The innermost (sub)parser named by ``words``, the flag values and positionals given so far, and the flag
    still waiting for its value (the last word was ``-n``, say)."""
    current, values, positionals, pending = parser, argparse.Namespace(), [], None
    for word in words:
        if pending is not None:
            _store(values, pending, word)
            pending = None
        elif word.startswith("-") and word != "-":
            name, has_value, value = word.partition("=")
            action = _option(current, name) or (_option(current, word[:2]) if not word.startswith("--") else None)
            if action is None or action.nargs == 0:
                continue
            if has_value:
                _store(values, action, value)
            elif action.option_strings and word not in action.option_strings:  # -ndemo
                _store(values, action, word[2:])
            else:
                pending = action
        elif word in _subcommands(current) and not positionals:
            current = _subcommands(current)[word]
        else:
            positionals.append(word)
    values.targets = positionals
    return current, values, pending


def _store(values: argparse.Namespace, action: argparse.Action, value: str) -> None:
    if action.dest == "filename":
        values.filename = [*getattr(values, "filename", []), value]
    else:
        setattr(values, action.dest, value)


#: a value named so is a path: the shell completes it (verbs need not attach a completer to every path flag)
PATH_METAVARS = ("PATH", "FILE", "DIR", "BUNDLE")


def _values_of(action: argparse.Action, prefix: str, values: argparse.Namespace) -> tuple[list[str], int]:
    completer = getattr(action, "completer", None)
    if isinstance(completer, Completer):
        return completer.cobra(prefix, values)
    if action.choices:
        return sorted(str(c) for c in action.choices if str(c).startswith(prefix)), NO_FILE_COMPLETION
    if action.metavar in PATH_METAVARS:
        return complete_files.cobra(prefix, values)
    return [], NO_FILE_COMPLETION  # a free value (a name, a duration): nothing to offer


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], int]:
    """Completions for the last word of ``words`` (possibly empty) and the cobra directive."""
    *done, partial = words or [""]
    current, values, pending = _read_words(parser, done)
    if pending is not None:
        return _values_of(pending, partial, values)
    if partial.startswith("--") and "=" in partial:
        name, _, prefix = partial.partition("=")
        action = _option(current, name)
        if action is None:
            return [], NO_FILE_COMPLETION
        found, directive = _values_of(action, prefix, values)
        return [f"{name}={c}" for c in found], directive
    if partial.startswith("-"):
        flags = sorted(o for a in current._actions for o in a.option_strings if o.startswith(partial))
        return flags, NO_FILE_COMPLETION
    commands = _subcommands(current)
    if commands:
        return sorted(c for c in commands if c.startswith(partial)), NO_FILE_COMPLETION
    positional = next((a for a in current._actions if not a.option_strings and a.dest != "help"), None)
    return _values_of(positional, partial, values) if positional is not None else ([], NO_FILE_COMPLETION)


def complete(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """``kubectl_complete-kvbackup ARGS... PARTIAL``: candidates on stdout, then ``:<directive>``."""
    words = argv[1:] if argv and argv[0] in ("__complete", "__completeNoDesc") else argv
    found, directive = candidates(parser, words)
    sys.stdout.write("".join(candidate + "\n" for candidate in found) + f":{directive}\n")
    return 0


def argcomplete_hook(parser: argparse.ArgumentParser) -> None:
    """Answer argcomplete's environment protocol (``_ARGCOMPLETE``, ``COMP_LINE``, ``COMP_POINT``) and exit."""
    import argcomplete

    # a value without a completer of its own (a path, a name) falls back to file names, as in any shell
    argcomplete.autocomplete(parser, always_complete_options=False, default_completer=complete_files)


# ---- kubectl kvbackup completion SHELL ----

SETUP = {
    "bash": "# kubectl kvbackup completion bash: source it from ~/.bashrc:  source <(kubectl kvbackup completion bash)",
    "zsh": "# kubectl kvbackup completion zsh: source it from ~/.zshrc (after compinit):  "
           "source <(kubectl kvbackup completion zsh)",
    "fish": "# kubectl kvbackup completion fish: kubectl kvbackup completion fish > "
            "~/.config/fish/completions/kubectl-kvbackup.fish",
}


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "completion",
        description="Print the script that makes TAB complete kubectl-kvbackup's verbs, flags, TYPE/NAME "
                    "arguments, namespaces, contexts and bundle paths. 'kubectl kvbackup <TAB>' itself completes "
                    "through kubectl's own completion (kubectl 1.26+), which runs the kubectl_complete-kvbackup "
                    "executable installed beside kubectl-kvbackup.",
        epilog="examples:\n  source <(kubectl kvbackup completion bash)\n"
               "  kubectl kvbackup completion fish > ~/.config/fish/completions/kubectl-kvbackup.fish\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shell", choices=SHELLS, help="bash, zsh or fish")
    parser.set_defaults(run=run)


def shell_script(shell: str, executable: str = "kubectl-kvbackup") -> str:
    import argcomplete

    return f"{SETUP[shell]}\n" + argcomplete.shellcode([executable], shell=shell, use_defaults=False)


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(shell_script(args.shell))
    return 0

