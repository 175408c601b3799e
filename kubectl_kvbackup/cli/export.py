"""``kubectl kvbackup export``: write a verifiable bundle of the selected workloads, guests frozen meanwhile."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable

from .common import (ProgressPrinter, UsageError, add_connection_flags, add_selection_flags, check_name_and_parallel,
                     parse_duration, selection_and_source, silent, warn)
from .graph import report_missing

if TYPE_CHECKING:
    from ..export import ExportOptions

FREEZE_MODES = ("auto", "required", "never")  # ExportOptions.freeze

EXAMPLES = """examples:
  # a running VM, its guest frozen while its PVCs are snapshotted, Secrets encrypted
  kubectl kvbackup export vm/db -n prod --snapshot --encrypt-key-file backup.key --to db.tar.gz
  # every workload of a namespace, refusing a crash-consistent backup
  kubectl kvbackup export --all -n prod --freeze=required --to prod-backup/
  # offline, from manifests
  kubectl kvbackup export -f examples/demo --all -n demo --to demo-bundle
"""


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "export",
        description="Export the object graph of the selected workloads as a bundle (directory or .tar.gz), with "
                    "export-time rules applied, guests frozen and thawed, and optional CSI snapshots.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_flags(parser)
    parser.add_argument("--to", required=True, metavar="PATH",
                        help="bundle to create: a directory, PATH.tar.gz (or .tgz), or - for a tar.gz on stdout")
    parser.add_argument("--name", help="backup name, used in labels and snapshot names (default: from the time)")
    parser.add_argument("--freeze", choices=FREEZE_MODES, default="auto",
                        help="auto: with --snapshot, freeze guests with an agent around the snapshots; required: "
                             "fail unless every running guest freezes (needs --snapshot); never (default: auto)")
    parser.add_argument("--unfreeze-timeout", default="5m", metavar="DURATION",
                        help="KubeVirt thaws a guest by itself after this long (default 5m)")
    parser.add_argument("--parallel", type=int, default=4, metavar="N", help="guests frozen at once (default 4)")
    parser.add_argument("--snapshot", action="store_true", help="create a CSI VolumeSnapshot of every PVC")
    parser.add_argument("--snapshot-class", metavar="NAME", help="VolumeSnapshotClass (default: the cluster's)")
    parser.add_argument("--snapshot-timeout", default="10m", metavar="DURATION",
                        help="how long to wait for snapshots to be ready (default 10m)")
    parser.add_argument("--encrypt-key-file", metavar="FILE",
                        help="encrypt Secrets with AES-256-GCM using this 32-byte key (or KVBACKUP_ENCRYPTION_KEY)")
    parser.add_argument("--exclude-secrets", action="store_true", help="leave Secrets out (recorded in the index)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    add_connection_flags(parser)
    parser.set_defaults(run=run, after_interrupt="no bundle was written; guests this command froze were thawed "
                                                  "unless an error above says otherwise")


def parse_unfreeze_timeout(text: str) -> float:
    """KubeVirt schedules its automatic thaw only for a timeout of whole seconds above zero."""
    seconds = parse_duration(text)
    if seconds is None or seconds < 1:
        raise UsageError(f'error: --unfreeze-timeout "{text}" must be at least 1s: it is KubeVirt\'s safety net '
                         "that thaws a guest if kvbackup dies")
    return seconds


def check_target(target: str) -> None:
    """``--to`` names what kvbackup writes: a directory, a .tar.gz (or .tgz), or ``-``; other archives are refused
    before anything is read, rather than silently written as a directory."""
    from ..bundle import archive_suffix

    accepted = "a directory, PATH.tar.gz (or .tgz), or - for a .tar.gz on stdout"
    if not target.strip():
        raise UsageError(f"error: --to is empty: give {accepted}")
    suffix = archive_suffix(target)
    if suffix is not None and suffix not in (".tar.gz", ".tgz"):
        raise UsageError(f'error: --to "{target}": kvbackup does not write {suffix} archives: give {accepted}')


def validate(args: argparse.Namespace) -> None:
    check_target(args.to)
    check_name_and_parallel(args)
    if args.filename and args.snapshot:
        raise UsageError("error: --snapshot needs a cluster: it cannot be used with -f")
    if args.freeze == "required" and not args.snapshot:
        raise UsageError("error: --freeze=required needs --snapshot: a freeze protects only a data step taken while "
                         "guests are frozen (without --snapshot the bundle holds objects, not disk data)")
    if args.to == "-" and sys.stdout.isatty():
        raise UsageError("error: refusing to write a tar.gz to a terminal: redirect stdout or give --to PATH")


def run(args: argparse.Namespace) -> int:
    from ..clock import now_iso
    from ..crypto import load_key
    from ..export import ExportOptions, backup_name_from, cut_deadline, name_suffix

    validate(args)
    unfreeze = parse_unfreeze_timeout(args.unfreeze_timeout)
    quiet_warn = (lambda m: None) if args.quiet else warn
    key = load_key(args.encrypt_key_file, quiet_warn)
    if key is None and not args.exclude_secrets:
        quiet_warn("warning: Secrets are stored unencrypted (files are mode 0600): pass --encrypt-key-file to "
                   "encrypt them, or --exclude-secrets")
    created = now_iso()
    snapshot_timeout = parse_duration(args.snapshot_timeout) or 600.0
    options = ExportOptions(backup_name=args.name or backup_name_from(created, name_suffix()), freeze=args.freeze,
                            unfreeze_timeout=unfreeze, parallel=args.parallel, snapshot=args.snapshot,
                            snapshot_class=args.snapshot_class, snapshot_timeout=snapshot_timeout,
                            cut_timeout=min(cut_deadline(unfreeze), snapshot_timeout), key=key,
                            exclude_secrets=args.exclude_secrets)
    printer = None if args.quiet else ProgressPrinter(sys.stderr, sys.stderr.isatty())
    try:
        index = export_selected(args, options, key, printer or silent, printer.warn if printer else warn)
    finally:
        if printer is not None:
            printer.close()
    if not args.quiet:
        summarize(index, args.to)
    return 0


def export_selected(args: argparse.Namespace, options: ExportOptions, key: bytes | None,
                    progress: Callable[[str, int, int], None], warn_during: Callable[[str], None]) -> dict:
    from .. import kinds
    from ..bundle import BundleWriter
    from ..export import export
    from ..freeze import terminate_as_exception
    from ..graph.walk import walk
    from ..sources import ClusterSource, select_roots

    selection, source = selection_and_source(args)
    with BundleWriter(args.to, key) as writer, terminate_as_exception():
        roots = select_roots(source, selection)
        if not roots:
            raise UsageError("error: nothing to export: no VMs, VMIs, VMI replica sets or VM pools matched")
        unread = {(kinds.SECRET.group, kinds.SECRET.kind)} if args.exclude_secrets else set()
        graph = walk(roots, source, keep_reached_roots=bool(selection.targets), unread_kinds=unread)
        progress("objects listed", len(graph.objects), len(graph.objects))
        if not args.quiet:
            report_missing(graph, warn_during)
        connection = source.connection if isinstance(source, ClusterSource) else None
        origin = ({"offline": False, "server": connection.server, "context": connection.context or None}
                  if connection else {"offline": True, "manifests": args.filename})
        return export(graph, writer, options, origin, connection, progress, warn_during,
                      sys.stdout.buffer if args.to == "-" else None)


def summarize(index: dict, target: str) -> None:
    nodes = [n for n in index["nodes"] if n.get("found")]
    skipped = [n for n in nodes if not n["restore"]]
    warn(f"exported {len(nodes)} objects to {'stdout' if target == '-' else target} "
         f"({len(skipped)} recorded but not to be restored)")
    freeze = index["freeze"]
    for vmi in freeze["vmis"]:
        timing = f", frozen for {vmi['frozenForSeconds']:.3f}s" if vmi.get("frozenForSeconds") is not None else ""
        reason = f": {vmi['reason']}" if vmi.get("reason") else ""
        warn(f"  vmi {vmi['namespace']}/{vmi['name']}: {vmi['result']}{timing}{reason}")
    if freeze.get("frozenWindowSeconds") is not None:
        warn(f"  frozen window: {freeze['frozenWindowSeconds']:.3f}s = snapshot cut "
             f"{freeze['snapshotCutSeconds']:.3f}s + overhead {freeze['overheadSeconds']:.3f}s")
    for volume in freeze["volumes"]:
        snapshot = f" (snapshot {volume['snapshot']})" if volume["snapshot"] else ""
        reason = f": {volume['reason']}" if volume["reason"] else ""
        warn(f"  pvc {volume['namespace']}/{volume['name']}{snapshot}: {volume['consistency']}{reason}")
