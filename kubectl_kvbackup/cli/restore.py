"""``kubectl kvbackup restore``: a bundle back into a cluster; ``adopt``: finish restores other tools made."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..cluster import KubeError, connect
from .common import (FIRMWARE_POLICIES, MAC_POLICIES, ProgressPrinter, UsageError, add_connection_flags,
                     check_name_and_parallel, connection_options, parse_duration, parse_targets, silent, warn)
from .printers import print_data

if TYPE_CHECKING:
    from .. import rules
    from ..restore import Plan

#: --volumes, --existing and --run-strategy as kubectl_kvbackup.restore and KubeVirt's RunStrategy take them
VOLUME_MODES = ("snapshots", "existing", "reimport")
EXISTING_MODES = ("fail", "skip", "update")
RUN_STRATEGIES = ("Halted", "Always", "RerunOnFailure", "Manual", "Once")

EXAMPLES = """examples:
  # everything in the bundle into namespace prod-copy, disks from the export's snapshots
  kubectl kvbackup restore db.tar.gz -n prod-copy --encrypt-key-file backup.key
  # only VM db, previewing the exact objects
  kubectl kvbackup restore db.tar.gz vm/db --dry-run=client -o yaml
  # the disks were restored by storage replication: use them as they are
  kubectl kvbackup restore prod-backup/ --volumes=existing --existing skip
"""


class Interrupted(KubeError):
    exit_code = 130


def register(subcommands: argparse._SubParsersAction) -> None:
    from ..crypto import KEY_ENVIRONMENT

    parser = subcommands.add_parser(
        "restore",
        description="Restore a verified bundle: missing namespaces first, then every object in dependency order with "
                    "the restore rules applied, volumes filled from the export's snapshots (or existing claims, or "
                    "imported again), and ownerReferences re-pointed at the restored owners.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.gz")
    parser.add_argument("targets", nargs="*", metavar="TYPE/NAME",
                        help="restore only these roots (vm/NAME, vmi/NAME, vmirs/NAME, vmpool/NAME) and their graphs")
    parser.add_argument("-n", "--namespace", help="restore the bundle's workload namespace into this one")
    parser.add_argument("--namespace-mapping", metavar="OLD=NEW,...", help="restore namespace OLD into NEW")
    parser.add_argument("--encrypt-key-file", metavar="FILE",
                        help=f"the export's key (or {KEY_ENVIRONMENT}): decrypts Secrets, authenticates the index")
    parser.add_argument("--volumes", choices=VOLUME_MODES,
                        help="snapshots: fill PVCs from the export's VolumeSnapshots (default when it took some); "
                             "existing: PVCs were restored by another tool; reimport: CDI imports disks again")
    parser.add_argument("--existing", choices=EXISTING_MODES, default="fail",
                        help="objects already in the cluster: fail (default: list them, create nothing), skip, update")
    parser.add_argument("--mac-policy", choices=MAC_POLICIES, default="regenerate-on-collision",
                        help="MAC addresses a VM fixes (default: regenerate-on-collision)")
    parser.add_argument("--firmware-policy", choices=FIRMWARE_POLICIES, default="regenerate-on-collision",
                        help="firmware serial and UUID a VM fixes (default: regenerate-on-collision)")
    parser.add_argument("--run-strategy", choices=RUN_STRATEGIES, help="set every restored VM's run strategy")
    parser.add_argument("--dry-run", choices=("none", "client", "server"), default="none", nargs="?", const="client",
                        help="client: print the plan or the objects; server: the cluster checks every write, "
                             "stores nothing")
    parser.add_argument("-o", "--output", choices=("json", "yaml", "name"),
                        help="with --dry-run=client: the objects; else the result")
    parser.add_argument("--wait", action="store_true",
                        help="wait until PVCs are bound, DataVolumes succeeded and VMs ready (or stopped as asked)")
    parser.add_argument("--timeout", default="10m", metavar="DURATION", help="how long --wait waits (default 10m)")
    parser.add_argument("--name", help="restore name, the value of the kvbackup.kubevirt.io/restore label "
                                       "(default: BACKUP-restore-TIME-XXXXX, with 5 random characters)")
    parser.add_argument("--parallel", type=int, default=8, metavar="N", help="writes at once inside a step")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    add_connection_flags(parser)
    parser.set_defaults(run=run)
    adopter = subcommands.add_parser(
        "adopt",
        description="Finish a restore made by another tool (Velero, kubectl apply of a bundle): objects created "
                    "before their owners keep those owners in the kvbackup.kubevirt.io/owner-references annotation; "
                    "adopt points their ownerReferences at the owners' current UIDs once the owners exist.")
    adopter.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    adopter.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    adopter.add_argument("--parallel", type=int, default=8, metavar="N", help="patches at once")
    add_connection_flags(adopter)
    adopter.set_defaults(run=run_adopt)


def identity_policies(args: argparse.Namespace) -> rules.IdentityPolicies:
    from .. import rules

    return rules.IdentityPolicies.parse(args.mac_policy, args.firmware_policy)


def namespace_mapping(args: argparse.Namespace, index: dict[str, Any]) -> dict[str, str]:
    from ..restore import parse_namespace_mapping

    if args.namespace and args.namespace_mapping:
        raise UsageError("error: use -n or --namespace-mapping, not both")
    if args.namespace_mapping:
        try:
            return parse_namespace_mapping(args.namespace_mapping)
        except ValueError as error:
            raise UsageError(f"error: --namespace-mapping: {error}: give OLD=NEW,OLD2=NEW2") from None
    if not args.namespace:
        return {}
    sources = sorted({r["namespace"] for r in index.get("roots") or []})
    if len(sources) != 1:
        raise UsageError(f"error: the bundle's workloads are in {len(sources)} namespaces ({', '.join(sources)}): "
                         "use --namespace-mapping OLD=NEW,... to say where each goes")
    return {sources[0]: args.namespace}


def volume_mode(args: argparse.Namespace, index: dict[str, Any]) -> str:
    if args.volumes:
        return args.volumes
    if index.get("snapshots"):
        return "snapshots"
    raise UsageError("error: the bundle holds no snapshots, so kvbackup cannot restore the disks' data by itself: "
                     "choose --volumes=existing (the PVCs were restored by another tool), --volumes=reimport (CDI "
                     "imports or clones the disks again from their sources: configuration restored, disk contents "
                     "new), or --volumes=snapshots (PVCs without a DataVolume are created empty)")


def validate(args: argparse.Namespace) -> None:
    check_name_and_parallel(args)
    parse_duration(args.timeout)
    if args.output in ("yaml", "name") and args.dry_run == "none":
        raise UsageError("error: -o yaml|name needs --dry-run=client; a restore prints its result with -o json")


def run(args: argparse.Namespace) -> int:
    printer = None if args.quiet else ProgressPrinter(sys.stderr, sys.stderr.isatty())
    try:
        return restore(args, printer)
    except KeyboardInterrupt:  # before any write: the writes say themselves how far they got
        raise Interrupted("interrupted: nothing was restored") from None
    finally:
        if printer is not None:
            printer.close()


def restore(args: argparse.Namespace, printer: ProgressPrinter | None) -> int:
    from ..bundle import encrypted_secrets, objects_as_read, open_verified
    from ..clock import now_iso
    from ..crypto import KEY_ENVIRONMENT, load_key
    from ..export import name_suffix
    from ..restore import (PlanError, RestoreOptions, apply_plan, parse_roots, plan_restore, read_target,
                           restore_name_from, target_ref, target_scope, wait_until_ready)
    from ..sources import ClusterSource

    validate(args)
    roots_asked = parse_targets(args.targets)
    progress = printer or silent
    key = load_key(args.encrypt_key_file, warn)
    bundle = open_verified(args.bundle, key)
    if encrypted_secrets(bundle) and key is None:
        raise UsageError(f"error: {args.bundle} holds encrypted Secrets: pass --encrypt-key-file or set "
                         f"{KEY_ENVIRONMENT} (key id {bundle.index.get('secrets', {}).get('keyId')}); a restore "
                         "without them would leave VMs without their credentials")
    index = bundle.index
    default_name = restore_name_from(index.get("name") or "kvbackup", now_iso(), name_suffix())
    options = RestoreOptions(name=args.name or default_name,
                             volumes=volume_mode(args, index), namespace_mapping=namespace_mapping(args, index),
                             existing=args.existing, identity=identity_policies(args),
                             run_strategy=args.run_strategy)
    roots = parse_roots(roots_asked, index) if roots_asked else None
    objects = objects_as_read(bundle, key)
    connection = connect(connection_options(args))
    source = ClusterSource(connection, warn=warn)
    wanted = [target_ref(ref, options.namespace_mapping) for ref in objects]
    target = read_target(source, target_scope(objects, index, options), wanted)
    plan = plan_restore(objects, index, options, target, roots)
    progress("objects read", len(objects), len(objects))
    if printer is not None:
        printer.close()  # what comes next prints lines of its own
    if args.dry_run == "client":
        return print_plan(plan, args.output)
    conflicts = plan.conflicts()
    if conflicts:
        names = ", ".join(str(a.ref) for a in conflicts[:20]) + (" …" if len(conflicts) > 20 else "")
        raise PlanError(f"error: {len(conflicts)} object(s) already exist: {names}: nothing was created; pass "
                        "--existing skip (keep them) or --existing update (replace them)")
    try:
        result = apply_plan(connection, plan, target, args.parallel, progress, dry_run=args.dry_run == "server")
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: restore {plan.name} stopped part way: re-run with --existing skip --name "
                          f"{plan.name} to complete it") from None
    if printer is not None:
        printer.close()  # the summary's lines come next
    if args.output == "json":
        print_data(result.to_dict(), "json", sys.stdout)
    if args.dry_run == "server":
        return report_dry_run(result, args.quiet)
    if not args.quiet:
        summarize(plan, result, connection.requests, index)
    if not result.ok:
        failed = "; ".join(f"{ref}: {error}" for ref, error in result.failed.items())
        raise PlanError(f"error: restore {plan.name} failed for {len(result.failed)} object(s): {failed}; "
                        f"{len(result.done)} written, {len(result.not_attempted)} not attempted: fix the cause and "
                        f"re-run with --existing skip --name {plan.name} to complete it")
    if args.wait:
        try:
            wait_until_ready(connection, result, parse_duration(args.timeout) or float("inf"), progress)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: restore {plan.name} is complete, only the wait for its objects to be "
                              "ready stopped") from None
    return 0


def run_adopt(args: argparse.Namespace) -> int:
    from ..restore import adopt
    from ..sources import ClusterSource

    if args.all_namespaces and args.namespace:
        raise UsageError("error: use -n or -A, not both")
    connection = connect(connection_options(args))
    source = ClusterSource(connection, all_namespaces=args.all_namespaces)
    outcome = adopt(connection, source, None if args.all_namespaces else connection.namespace, max(1, args.parallel))
    for ref in outcome.adopted:
        print(f"{ref} adopted")
    for ref in outcome.waiting:
        warn(f"{ref}: its owners do not exist yet: run adopt again once they are restored")
    for ref, error in outcome.failed.items():
        warn(f"{ref}: {error}")
    return 1 if outcome.failed else 0


def print_plan(plan: Plan, output: str | None) -> int:
    from ..refs import ref_of
    from ..restore import objects_to_print, plan_rows

    if output == "name":
        for obj in objects_to_print(plan):
            print(ref_of(obj).display_name())
    elif output:
        print_data({"apiVersion": "v1", "kind": "List", "items": objects_to_print(plan)}, output, sys.stdout)
    else:
        rows = [("OBJECT", "ACTION", "NOTES"), *plan_rows(plan)]
        width = max(len(r[0]) for r in rows)
        for obj, action, notes in rows:
            print(f"{obj:<{width}}  {action:<16}  {notes}".rstrip())
    conflicts = plan.conflicts()
    if conflicts:
        warn(f"error: {len(conflicts)} object(s) already exist: a restore would create nothing; pass --existing "
             "skip or --existing update")
        return 1
    return 0


def report_dry_run(result: Any, quiet: bool) -> int:
    for ref, error in result.failed.items():
        print(f"{ref}: would be rejected: {error}")
    if not quiet:
        unchecked = f", {len(result.not_attempted)} not checked (their namespace does not exist yet)" \
            if result.not_attempted else ""
        warn(f"server dry run: {len(result.done)} write(s) accepted, {len(result.failed)} rejected{unchecked}")
    return 1 if result.failed else 0


def summarize(plan: Plan, result: Any, requests: int, index: dict[str, Any]) -> None:
    from ..restore import needs_from_outside

    for action in plan.actions:
        if action.verb == "skip":
            warn(f"  not restored: {action.ref}: {'; '.join(action.notes)}")
        for change in action.changes:
            warn(f"  changed {action.ref}: {change}")
    for ref, what, advice in needs_from_outside(plan, index):
        warn(f"  not in the bundle: {ref} uses {what}" + (f": {advice}" if advice else ""))
    warn(f"restore {plan.name}: {len(result.done)} object(s) written, {len(result.owners_repointed)} "
         f"ownerReference(s) re-pointed, {len(plan.namespaces)} namespace(s) created, {requests} API requests")

