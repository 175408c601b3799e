"""Output formats of the graph: tree (default), json, yaml, name, wide (a table), dot. Data goes to stdout only."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, TextIO

if TYPE_CHECKING:
    from ..graph.walk import Graph, GraphEdge, GraphNote
    from ..refs import Ref

FORMATS = ("tree", "json", "yaml", "name", "wide", "dot")
#: why an object is not restored (a rule name), or None when it is; ``graph`` asks the export rules, ``inspect`` the
#: bundle's index
NotRestored = Callable[["Ref"], "str | None"]


def _label(ref: Ref, namespace: str) -> str:
    where = f"{ref.namespace}/" if ref.namespace and ref.namespace != namespace else ""
    return f"{ref.kind}/{where}{ref.name}"


def print_tree(graph: Graph, out: TextIO, annotate: Callable[[Ref], str] = lambda ref: "") -> None:
    """An indented tree under each root: each node with the field that led to it.

    A node reached twice is expanded only the first time, so shared ConfigMaps or instancetypes print once.
    """
    expanded: set[Ref] = set()
    # grouped once: a lookup per node, where a scan of every edge per node made a large tree quadratic
    edges_from: dict[Ref, list[GraphEdge]] = {}
    notes_of: dict[Ref, list[GraphNote]] = {}
    for edge in graph.edges:
        edges_from.setdefault(edge.source, []).append(edge)
    for graph_note in graph.notes:
        notes_of.setdefault(graph_note.source, []).append(graph_note)

    def emit(ref: Ref, prefix: str, connector: str, note: str, namespace: str) -> None:
        found = graph.found(ref)
        status = "" if found else "  [not found]"
        extra = annotate(ref)
        out.write(f"{prefix}{connector}{_label(ref, namespace)}{status}{note}{extra}\n")
        if not found:
            return
        if ref in expanded and (ref in edges_from or ref in notes_of):
            out.write(f"{prefix}{'    ' if connector.startswith('└') else '│   ' if connector else ''}"
                      "└── (dependencies shown above)\n")
            return
        expanded.add(ref)
        emit_children(ref, prefix + ("    " if connector.startswith("└") else "│   " if connector else ""), namespace)

    def emit_children(ref: Ref, prefix: str, namespace: str) -> None:
        """Its dependencies, then what it uses that no object holds."""
        edges, notes = edges_from.get(ref, []), notes_of.get(ref, [])
        for i, edge in enumerate(edges):
            last = i == len(edges) + len(notes) - 1
            optional = ", optional" if edge.optional else ""
            emit(edge.target, prefix, "└── " if last else "├── ", f"  ({edge.path}{optional})", namespace)
        for i, note in enumerate(notes):
            out.write(f"{prefix}{'└── ' if i == len(notes) - 1 else '├── '}! {note.what}  ({note.path})\n")

    for root in graph.roots:
        where = f" (namespace {root.namespace})" if root.namespace else ""
        out.write(f"{root.kind}/{root.name}{where}{annotate(root)}\n")
        expanded.add(root)
        emit_children(root, "", root.namespace)


def print_names(graph: Graph, out: TextIO) -> None:
    for ref in graph.nodes:
        if graph.found(ref):
            out.write(ref.display_name() + "\n")


def _dot_string(text: str) -> str:
    """A DOT quoted string: ``\\n`` in it is Graphviz's line break, so real newlines become that escape."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_id(ref: Ref) -> str:
    return _dot_string("/".join((ref.group or "core", ref.kind, ref.namespace or "_cluster", ref.name)))


def print_dot(graph: Graph, out: TextIO, not_restored: NotRestored = lambda ref: None) -> None:
    """A Graphviz digraph: roots bold, absent objects dashed red, objects not to be restored grey with the rule."""
    out.write("digraph kvbackup {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n")
    for ref in graph.nodes:
        lines = [ref.kind, f"{ref.namespace + '/' if ref.namespace else ''}{ref.name}"]
        style = "" if graph.found(ref) else ", style=dashed, color=red"
        rule = not_restored(ref) if graph.found(ref) else None
        if rule:
            lines.append(f"not restored: {rule}")
            style = ", style=\"filled,dashed\", fillcolor=lightgrey"
        bold = ", penwidth=2" if ref in graph.roots else ""
        label = _dot_string("\n".join(lines))
        out.write(f"  {_dot_id(ref)} [label={label}{style}{bold}];\n")
    for edge in graph.edges:
        style = ", style=dashed" if edge.optional else ""
        out.write(f"  {_dot_id(edge.source)} -> {_dot_id(edge.target)} [label={_dot_string(edge.path)}{style}];\n")
    out.write("}\n")


def print_table(graph: Graph, out: TextIO, not_restored: NotRestored = lambda ref: None) -> None:
    """One row per object, as kubectl get -o wide: kind, name, namespace, found, and the restore decision."""
    rows = [("KIND", "NAME", "NAMESPACE", "FOUND", "RESTORE")]
    for ref in graph.nodes:
        found = graph.found(ref)
        rule = not_restored(ref) if found else None
        restore = "-" if not found else f"no ({rule})" if rule else "yes"
        rows.append((ref.kind, ref.name, ref.namespace or "<cluster>", "yes" if found else "no", restore))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def print_data(data: Any, output: str, out: TextIO) -> None:
    if output == "json":
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        import yaml

        yaml.safe_dump(data, out, sort_keys=False, default_flow_style=False)


def print_graph(graph: Graph, output: str, out: TextIO, not_restored: NotRestored = lambda ref: None) -> None:
    if output == "tree":
        print_tree(graph, out)
    elif output == "name":
        print_names(graph, out)
    elif output == "dot":
        print_dot(graph, out, not_restored)
    elif output == "wide":
        print_table(graph, out, not_restored)
    else:
        print_data(graph.to_dict(), output, out)
