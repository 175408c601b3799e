"""``kubectl kvbackup freeze`` / ``thaw``: guest freeze and thaw for other tools' backup hooks.

``freeze`` is all or nothing: when one guest fails to freeze, those already frozen are thawed before it exits 1, so
a failed pre-backup hook never leaves guests stopped.
"""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from .. import kinds
from ..clock import go_duration
from ..cluster import ApiError, KubeError, connect
from .common import (UsageError, add_connection_flags, add_namespace_flag, add_targets, connection_options,
                     parse_targets, silent, warn)
from .export import parse_unfreeze_timeout

if TYPE_CHECKING:
    from ..refs import Ref

VMI_TYPES = (kinds.VMI, kinds.VM)


def register(subcommands: argparse._SubParsersAction) -> None:
    for verb, text in (("freeze", "Freeze guest filesystems (for backup hooks)"),
                       ("thaw", "Thaw guest filesystems frozen by freeze")):
        parser = subcommands.add_parser(verb, description=f"{text}: vmi/NAME or vm/NAME (the VM's running VMI).")
        add_targets(parser, "+", VMI_TYPES, "vmi/NAME", "vmi/NAME, or vm/NAME for the VM's running VMI")
        add_namespace_flag(parser)
        if verb == "freeze":
            parser.add_argument("--unfreeze-timeout", default="5m", metavar="DURATION",
                                help="KubeVirt thaws the guest by itself after this long (default 5m)")
            parser.add_argument("--parallel", type=int, default=4, metavar="N", help="guests frozen at once")
        add_connection_flags(parser)
        parser.set_defaults(run=run_freeze if verb == "freeze" else run_thaw,
                            after_interrupt="guests this command froze were thawed unless an error above says "
                                            "otherwise" if verb == "freeze" else "")


def _vmi_refs(args: argparse.Namespace, namespace: str) -> list[Ref]:
    from ..refs import Ref

    refs = []
    for kind, name in parse_targets(args.targets):
        if kind not in VMI_TYPES:
            raise UsageError(f"error: {kind.resource} cannot be frozen: name vmi/NAME or vm/NAME")
        refs.append(Ref.of(kinds.VMI, namespace, name))
    return refs


def run_freeze(args: argparse.Namespace) -> int:
    from ..freeze import GuestFreezer, terminate_as_exception

    timeout = parse_unfreeze_timeout(args.unfreeze_timeout)
    connection = connect(connection_options(args))
    refs = _vmi_refs(args, connection.namespace)
    vmis = []
    for ref in refs:
        try:
            vmis.append(connection.request("GET", f"/apis/kubevirt.io/v1/namespaces/{ref.namespace}/"
                                                  f"virtualmachineinstances/{ref.name}"))
        except ApiError as error:
            if error.status == 404:
                raise KubeError(f'Error from server (NotFound): virtualmachineinstances.kubevirt.io "{ref.name}" '
                                "not found (a stopped VM has no VMI to freeze)") from None
            raise
    with terminate_as_exception():
        freezer = GuestFreezer(connection, timeout, args.parallel, silent, warn)
        try:
            records = freezer.freeze(vmis)
        except BaseException:
            freezer.thaw()
            raise
        failed = [r for r in records if r.result != "frozen"]
        if failed:
            freezer.thaw()
            for record in failed:
                warn(f"error: vmi {record.namespace}/{record.name} not frozen: {record.result} ({record.reason})")
            warn("every guest frozen by this command was thawed again")
            return 1
    for record in records:
        print(f"virtualmachineinstance.kubevirt.io/{record.name} frozen (thaws by itself after "
              f"{go_duration(timeout)})")
    return 0


def run_thaw(args: argparse.Namespace) -> int:
    from ..freeze import subresource_path

    connection = connect(connection_options(args))
    failures = 0
    for ref in _vmi_refs(args, connection.namespace):
        try:
            connection.request("PUT", subresource_path(ref.namespace, ref.name, "unfreeze"))
        except KubeError as error:
            failures += 1
            warn(f"error: vmi {ref.namespace}/{ref.name} not thawed: {error}")
            continue
        print(f"virtualmachineinstance.kubevirt.io/{ref.name} thawed")
    return 1 if failures else 0
