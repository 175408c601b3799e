"""``kubectl kvbackup graph``: show every object a backup of the selected workloads must carry."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable

from .common import add_connection_flags, add_selection_flags, selection_and_source, warn
from .printers import FORMATS, NotRestored, print_graph

if TYPE_CHECKING:
    from ..graph.walk import Graph
    from ..refs import Ref

EXAMPLES = """examples:
  # the objects VM vm1 depends on, as a tree
  kubectl kvbackup graph vm/vm1 -n prod
  # every VM, VMI, replica set and pool in all namespaces, as JSON
  kubectl kvbackup graph --all -A -o json
  # offline, from manifests
  kubectl kvbackup graph -f examples/ --all -n demo
  # a table with each object's restore decision, or a picture
  kubectl kvbackup graph vm/vm1 -o wide
  kubectl kvbackup graph vm/vm1 -o dot | dot -Tsvg > vm1.svg
"""


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "graph",
        description="Show every Kubernetes object a backup of the selected workloads must carry, and why.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_flags(parser)
    parser.add_argument("-o", "--output", choices=FORMATS, default="tree", help="output format (default: tree)")
    add_connection_flags(parser)
    parser.set_defaults(run=run)


def report_missing(graph: Graph, say: Callable[[str], None] = warn) -> None:
    """What a backup of the graph lacks: required objects not found, and data no object holds."""
    for edge in graph.missing_required():
        say(f"warning: {edge.target} not found (required by {edge.source} through {edge.path})")
    for note in graph.notes:
        say(f"warning: {note.source} uses {note.what} ({note.path}): {note.advice}")


def build_graph(args: argparse.Namespace) -> Graph:
    from ..graph.walk import walk
    from ..sources import select_roots

    selection, source = selection_and_source(args)
    roots = select_roots(source, selection)
    if not roots:
        where = "any namespace" if selection.all_namespaces else f'namespace "{selection.namespace}"'
        warn(f"No VMs, VMIs, VMI replica sets or VM pools found in {where}.")
    return walk(roots, source, keep_reached_roots=bool(selection.targets))


def export_decisions(graph: Graph) -> NotRestored:
    """What the export rules would decide for each object: the same function export calls, as for an export with
    ``--snapshot`` (every claim's data captured), so the column shows what the objects themselves allow."""
    from .. import rules

    def not_restored(ref: Ref) -> str | None:
        obj = graph.objects.get(ref)
        if obj is None:
            return None
        decision = rules.export_object(obj, graph.objects.get, lambda claim: True)[1]
        return None if decision.restore else decision.rule

    return not_restored


def run(args: argparse.Namespace) -> int:
    graph = build_graph(args)
    report_missing(graph)
    print_graph(graph, args.output, sys.stdout, export_decisions(graph))
    return 0
