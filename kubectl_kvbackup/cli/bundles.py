"""``kubectl kvbackup verify`` and ``inspect``: check a bundle, and show what it holds and how it was made."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .common import add_bundle_argument, warn
from .printers import FORMATS, print_data, print_graph, print_tree

if TYPE_CHECKING:
    from ..graph.walk import Graph


def register(subcommands: argparse._SubParsersAction) -> None:
    check = subcommands.add_parser("verify",
                                   description="Check that every file a bundle's index lists is present and "
                                               "unchanged, and that nothing was added. Exit 0 when valid, 1 if not.")
    add_bundle_argument(check)
    add_key_flag(check)
    check.set_defaults(run=run_verify)
    show = subcommands.add_parser("inspect",
                                  description="Show what a verified bundle holds: its object graph with each "
                                              "object's restore decision, the guest freeze report and snapshots.")
    add_bundle_argument(show)
    show.add_argument("-o", "--output", choices=FORMATS, default="tree", help="output format (default: tree)")
    add_key_flag(show)
    show.set_defaults(run=run_inspect)


def add_key_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encrypt-key-file", metavar="FILE",
                        help="the export's key (or KVBACKUP_ENCRYPTION_KEY): also checks that the index is authentic")


def run_verify(args: argparse.Namespace) -> int:
    from ..bundle import read_bundle, verify
    from ..crypto import load_key

    bundle = read_bundle(args.bundle)
    result = verify(bundle, load_key(args.encrypt_key_file, warn))
    if result.ok:
        if result.authentic:
            note = "index authenticated"
        elif bundle.index.get("integrity"):
            note = "index not authenticated: pass the export's key to check it"
        else:
            note = "no MAC: checksums detect corruption, not deliberate edits (export with a key to authenticate)"
        print(f"{args.bundle}: valid ({len(bundle.index.get('files') or {})} files verified; {note})")
        return 0
    for problem in result.problems():
        print(problem)
    warn(f"error: {args.bundle} failed verification: restore refuses it")
    return 1


def graph_of(index: dict[str, Any]) -> Graph:
    from ..graph.walk import Graph, GraphEdge
    from ..refs import Ref

    def ref(d: dict[str, str]) -> Ref:
        return Ref(d["group"], d["kind"], d["namespace"], d["name"])

    graph = Graph(roots=[ref(r) for r in index["roots"]])
    for node in index["nodes"]:
        graph.objects[ref(node)] = node if node.get("found") or node.get("excluded") else None
    graph.edges = [GraphEdge(ref(e["from"]), ref(e["to"]), e["path"], e["optional"]) for e in index["edges"]]
    return graph


def decision_note(node: dict[str, Any] | None) -> str:
    if not node:
        return ""
    if node.get("excluded"):
        return "  [excluded]"
    if not node.get("restore"):
        return f"  [not restored: {node.get('reason')}]"
    marks = [mark for mark, present in (
        ("encrypted", node.get("encrypted")),
        ("synthesized", node.get("synthesized")),
        ("shared: created only if absent", node.get("shared")),
        ("data: from snapshot" if node.get("data") == "snapshot" else "data: none, restored empty",
         node.get("data") is not None)) if present]
    return f"  [{'; '.join(marks)}]" if marks else ""


def run_inspect(args: argparse.Namespace) -> int:
    from ..bundle import open_verified
    from ..crypto import load_key

    index = open_verified(args.bundle, load_key(args.encrypt_key_file, warn)).index
    graph = graph_of(index)
    if args.output in ("json", "yaml"):
        data = {**graph.to_dict(), "nodes": index["nodes"], "name": index["name"], "createdAt": index["createdAt"],
                "source": index["source"], "freeze": index["freeze"], "snapshots": index["snapshots"],
                "secrets": index["secrets"]}
        print_data(data, args.output, sys.stdout)
    elif args.output == "tree":
        print(f"bundle {index['name']} created {index['createdAt']} from "
              f"{'manifests' if index['source'].get('offline') else index['source'].get('server')}")
        print_tree(graph, sys.stdout, lambda r: decision_note(graph.objects.get(r)))
        freeze = index["freeze"]
        window = freeze.get("frozenWindowSeconds")
        print(f"freeze ({freeze['mode']}{f', frozen window {window:.3f}s' if window is not None else ''}):")
        for vmi in freeze["vmis"]:
            timing = f" for {vmi['frozenForSeconds']:.3f}s" if vmi.get("frozenForSeconds") is not None else ""
            print(f"  {vmi['namespace']}/{vmi['name']}: {vmi['result']}{timing}"
                  f"{' (' + vmi['reason'] + ')' if vmi.get('reason') else ''}")
        for snapshot in index["snapshots"]:
            print(f"snapshot {snapshot['namespace']}/{snapshot['name']} of PVC {snapshot['pvc']['name']}: "
                  f"{'ready' if snapshot['readyToUse'] else 'not ready'}")
    else:
        print_graph(graph, args.output, sys.stdout, lambda ref: not_restored(graph.objects.get(ref)))
    return 0


def not_restored(node: dict[str, Any] | None) -> str | None:
    """The rule that keeps a bundle's object from being restored, as its index records it."""
    if not node or node.get("restore", True) and not node.get("excluded"):
        return None
    return "excluded" if node.get("excluded") else node.get("rule") or "not restored"
