"""Flags every subcommand shares, parsed as kubectl parses them, and the source they select."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import TYPE_CHECKING, Callable, TextIO

from .. import kinds
from ..errors import KubeError
from ..kinds import UnknownKindError
from . import completion

#: --mac-policy and --firmware-policy as rules.MacPolicy and rules.FirmwarePolicy spell them (written out here, so
#: that parsing flags does not load the rules; a test keeps the two equal)
MAC_POLICIES = ("keep", "regenerate-on-collision", "regenerate", "clear")
FIRMWARE_POLICIES = ("keep", "regenerate-on-collision", "regenerate")

if TYPE_CHECKING:
    from ..cluster import ConnectionOptions
    from ..sources import Selection, Source


class UsageError(KubeError):
    exit_code = 2


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster connection (as kubectl)")
    group.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
                       ).completer = completion.complete_files
    group.add_argument("--context", help="the kubeconfig context to use").completer = completion.complete_contexts
    group.add_argument("--cluster", help="the kubeconfig cluster to use").completer = completion.complete_clusters
    group.add_argument("--user", help="the kubeconfig user to use").completer = completion.complete_users
    group.add_argument("--request-timeout", default="0", metavar="DURATION",
                       help="how long to wait for each API request (e.g. 10s, 1m; 0: no limit)")
    group.add_argument("-v", "--v", dest="verbosity", type=int, default=0, metavar="LEVEL",
                       help="log level: 6 logs API requests, 9 adds tracebacks on errors")


def add_namespace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="the namespace (default: the context's)"
                        ).completer = completion.complete_namespaces


def add_targets(parser: argparse.ArgumentParser, nargs: str = "*", kinds_accepted: tuple[kinds.Kind, ...] = (),
                metavar: str = "TYPE/NAME", help_text: str = "vm/NAME, vmi/NAME, vmirs/NAME, vmpool/NAME (or TYPE "
                                                               "NAME...)") -> None:
    """The TYPE/NAME arguments; TAB offers the types ``kinds_accepted`` (default: every root kind), then names."""
    parser.add_argument("targets", nargs=nargs, metavar=metavar, help=help_text).completer = \
        completion.TargetCompleter(kinds_accepted or kinds.ROOT_KINDS)


def add_bundle_argument(parser: argparse.ArgumentParser) -> None:
    """A bundle to read: TAB completes directories and .tar.gz files."""
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.gz").completer = \
        completion.complete_bundles


def add_selection_flags(parser: argparse.ArgumentParser) -> None:
    add_targets(parser)
    parser.add_argument("-l", "--selector", help="label selector over VMs, VMIs, VMI replica sets and VM pools")
    parser.add_argument("--all", dest="everything", action="store_true",
                        help="every VM, VMI, VMI replica set and VM pool in the namespace")
    add_namespace_flag(parser)
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="look in every namespace")
    parser.add_argument("-f", "--filename", action="append", default=[], metavar="PATH",
                        help="read objects from manifests instead of a cluster: file, directory or - (repeatable)"
                        ).completer = completion.complete_files


#: a backup or restore name: it becomes a label value and a part of object names
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_name_and_parallel(args: argparse.Namespace) -> None:
    """``--name`` and ``--parallel`` as export and restore take them."""
    if args.name is not None and not NAME.fullmatch(args.name):
        raise UsageError(f'error: --name "{args.name}" must be a valid label value and name part: lowercase letters, '
                         "digits and '-', starting and ending with a letter or digit, at most 63 characters")
    if args.parallel < 1:
        raise UsageError("error: --parallel must be 1 or more")


def parse_duration(text: str) -> float | None:
    """kubectl's --request-timeout: a bare number is seconds; units s, m, h, ms; 0 means no limit."""
    units = (("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
    value = text.strip()
    try:
        for suffix, factor in units:
            if value.endswith(suffix):
                seconds = float(value[: -len(suffix)]) * factor
                break
        else:
            seconds = float(value)
    except ValueError:
        raise UsageError(f'error: invalid duration "{text}": use a number with a unit, such as 30s or 1m') from None
    if seconds < 0:
        raise UsageError(f'error: invalid duration "{text}": must not be negative')
    return seconds or None


def parse_targets(words: list[str]) -> tuple[tuple[kinds.Kind, str], ...]:
    """``vm/a vmi/b`` or ``vm a b`` (kubectl's two forms) into (Kind, name) pairs of root kinds."""
    if not words:
        return ()
    try:
        if "/" not in words[0]:
            kind = kinds.resolve_type(words[0], kinds.ROOT_KINDS)
            if len(words) == 1:
                raise UsageError(f"error: no name given for {words[0]}: use TYPE/NAME, TYPE NAME, -l or --all")
            if any("/" in w for w in words[1:]):
                raise UsageError("error: there is no need to specify a resource type as a separate argument "
                                 "when passing arguments in resource/name form")
            return tuple((kind, name) for name in words[1:])
        pairs = []
        for word in words:
            type_text, _, name = word.partition("/")
            if not name or "/" not in word:
                raise UsageError(f'error: arguments in resource/name form must have a single resource and name: "{word}"')
            pairs.append((kinds.resolve_type(type_text, kinds.ROOT_KINDS), name))
        return tuple(pairs)
    except UnknownKindError as error:
        raise UsageError(f"error: {error}") from None


def selection_and_source(args: argparse.Namespace) -> tuple[Selection, Source]:
    from ..cluster import connect, default_namespace
    from ..sources import ClusterSource, ManifestSource, Selection, load_manifests

    targets = parse_targets(args.targets)
    chosen = sum(bool(x) for x in (targets, args.selector is not None, args.everything))
    if chosen != 1:
        raise UsageError("error: name the objects (TYPE/NAME...), or use exactly one of -l SELECTOR or --all")
    if args.all_namespaces and targets:
        raise UsageError("error: a resource cannot be retrieved by name across all namespaces")
    if args.filename:
        # objects without a namespace go where kubectl apply -f would put them: -n, else the context's namespace
        namespace = default_namespace(connection_options(args))
        source: Source = ManifestSource(load_manifests(args.filename, namespace))
    else:
        connection = connect(connection_options(args))
        namespace = connection.namespace
        source = ClusterSource(connection, all_namespaces=args.all_namespaces, warn=warn)
    selection = Selection(targets=targets, selector=args.selector, everything=args.everything,
                          namespace=namespace, all_namespaces=args.all_namespaces)
    return selection, source


def connection_options(args: argparse.Namespace) -> ConnectionOptions:
    from ..cluster import ConnectionOptions

    return ConnectionOptions(kubeconfig=args.kubeconfig, context=args.context, cluster=args.cluster, user=args.user,
                             namespace=getattr(args, "namespace", None),
                             request_timeout=parse_duration(args.request_timeout))


class ProgressPrinter:
    """Progress on stderr. On a terminal, one line rewritten in place (phase, counts, elapsed time); elsewhere, a line
    when a phase starts and one per minute while it lasts, so that logs show a long wait is not a hang."""

    def __init__(self, stream: TextIO, live: bool, clock: Callable[[], float] = time.monotonic,
                 every: float = 60.0):
        self.stream, self.live, self.clock, self.every = stream, live, clock, every
        self.phase = ""
        self.started = self.shown = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = self.clock()
        if phase != self.phase:
            if self.live and self.phase:
                self.stream.write("\n")
            self.phase, self.started, self.shown = phase, now, now
            if not self.live:
                self._line(f"{phase}: {done}/{total}")
                return
            self.shown = -self.every  # a new phase shows at once
        elapsed = now - self.started
        if self.live and (done == total or now - self.shown >= 0.1):
            self.stream.write(f"\r{phase}: {done}/{total} ({elapsed:.0f}s)\x1b[K")
            self.stream.flush()
            self.shown = now
        elif not self.live and now - self.shown >= self.every:
            self._line(f"{phase}: {done}/{total} after {elapsed:.0f}s")
            self.shown = now

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        """A warning on a line of its own: the live line is cleared first and drawn again at the next count."""
        if self.live and self.phase:
            self.stream.write("\r\x1b[K")
            self.shown = -self.every
        self._line(message)

    def close(self) -> None:
        if self.live and self.phase:
            self.stream.write("\n")
        self.phase = ""


def silent(phase: str, done: int, total: int) -> None:
    """-q: no progress."""
