"""Output formats of the graph: tree (default), json, yaml, name, dot. Data goes to stdout only."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, TextIO

if TYPE_CHECKING:
    from ..graph.walk import Graph
    from ..refs import Ref

FORMATS = ("tree", "json", "yaml", "name", "dot")


def _label(ref: Ref, namespace: str) -> str:
    where = f"{ref.namespace}/" if ref.namespace and ref.namespace != namespace else ""
    return f"{ref.kind}/{where}{ref.name}"


def print_tree(graph: Graph, out: TextIO, annotate: Callable[[Ref], str] = lambda ref: "") -> None:
    """An indented tree under each root: each node with the field that led to it.

    A node reached twice is expanded only the first time, so shared ConfigMaps or instancetypes print once.
    """
    expanded: set[Ref] = set()

    def emit(ref: Ref, prefix: str, connector: str, note: str, namespace: str) -> None:
        found = graph.found(ref)
        status = "" if found else "  [not found]"
        extra = annotate(ref)
        out.write(f"{prefix}{connector}{_label(ref, namespace)}{status}{note}{extra}\n")
        if not found:
            return
        children = graph.edges_from(ref)
        if ref in expanded and children:
            out.write(f"{prefix}{'    ' if connector.startswith('└') else '│   ' if connector else ''}"
                      "└── (dependencies shown above)\n")
            return
        expanded.add(ref)
        child_prefix = prefix + ("    " if connector.startswith("└") else "│   " if connector else "")
        for i, edge in enumerate(children):
            last = i == len(children) - 1
            optional = ", optional" if edge.optional else ""
            emit(edge.target, child_prefix, "└── " if last else "├── ", f"  ({edge.path}{optional})", namespace)

    for root in graph.roots:
        where = f" (namespace {root.namespace})" if root.namespace else ""
        out.write(f"{root.kind}/{root.name}{where}{annotate(root)}\n")
        expanded.add(root)
        children = graph.edges_from(root)
        for i, edge in enumerate(children):
            last = i == len(children) - 1
            optional = ", optional" if edge.optional else ""
            emit(edge.target, "", "└── " if last else "├── ", f"  ({edge.path}{optional})", root.namespace)


def print_names(graph: Graph, out: TextIO) -> None:
    for ref in graph.nodes:
        if graph.found(ref):
            out.write(ref.display_name() + "\n")


def _dot_id(ref: Ref) -> str:
    return json.dumps("/".join((ref.group or "core", ref.kind, ref.namespace or "_cluster", ref.name)))


def print_dot(graph: Graph, out: TextIO) -> None:
    out.write("digraph kvbackup {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n")
    for ref in graph.nodes:
        label = json.dumps(f"{ref.kind}\\n{ref.namespace + '/' if ref.namespace else ''}{ref.name}")
        style = "" if graph.found(ref) else ", style=dashed, color=red"
        bold = ", penwidth=2" if ref in graph.roots else ""
        out.write(f"  {_dot_id(ref)} [label={label}{style}{bold}];\n")
    for edge in graph.edges:
        style = ", style=dashed" if edge.optional else ""
        out.write(f"  {_dot_id(edge.source)} -> {_dot_id(edge.target)} [label={json.dumps(edge.path)}{style}];\n")
    out.write("}\n")


def print_data(data: Any, output: str, out: TextIO) -> None:
    if output == "json":
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        import yaml

        yaml.safe_dump(data, out, sort_keys=False, default_flow_style=False)


def print_graph(graph: Graph, output: str, out: TextIO) -> None:
    if output == "tree":
        print_tree(graph, out)
    elif output == "name":
        print_names(graph, out)
    elif output == "dot":
        print_dot(graph, out)
    else:
        print_data(graph.to_dict(), output, out)
