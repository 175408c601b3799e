"""The closure of the edges from a set of roots: the complete set of objects a backup must carry."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

from ..refs import Ref
from .edges import Edge, Index, Obj, edges_of, uncaptured_data


@dataclass(frozen=True)
class GraphEdge:
    source: Ref
    target: Ref
    path: str
    optional: bool

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.source.to_dict(), "to": self.target.to_dict(), "path": self.path,
                "optional": self.optional}


@dataclass(frozen=True)
class GraphNote:
    """Data an object of the graph uses that no object of the graph holds (a hostDisk, the source of an unfinished
    clone): the backup cannot carry it."""

    source: Ref
    path: str
    what: str
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.source.to_dict(), "path": self.path, "what": self.what, "advice": self.advice}


@dataclass
class Graph:
    roots: list[Ref]
    objects: dict[Ref, Obj | None] = field(default_factory=dict)  # None: not found
    edges: list[GraphEdge] = field(default_factory=list)
    notes: list[GraphNote] = field(default_factory=list)
    #: nodes reached but, by request, never read (``export --exclude-secrets``): neither found nor missing
    unread: list[Ref] = field(default_factory=list)

    @property
    def nodes(self) -> list[Ref]:
        return list(self.objects)

    def found(self, ref: Ref) -> bool:
        return self.objects.get(ref) is not None

    def missing_required(self) -> list[GraphEdge]:
        """Edges whose target must exist but does not: what a restore would lack."""
        unread = set(self.unread)
        return [e for e in self.edges if not e.optional and not self.found(e.target) and e.target not in unread]

    def to_dict(self) -> dict[str, Any]:
        return {
            "roots": [r.to_dict() for r in self.roots],
            "nodes": [{**r.to_dict(), "found": self.found(r)} for r in self.objects],
            "edges": [e.to_dict() for e in self.edges],
            "notes": [n.to_dict() for n in self.notes],
        }


def walk(roots: Iterable[tuple[Ref, Obj]], index: Index, keep_reached_roots: bool = True,
         unread_kinds: Collection[tuple[str, str]] = ()) -> Graph:
    """Breadth-first closure: every found node is expanded, every VM/VMI/VMIRS/pool reached included.

    Nodes keep the order they were reached in, so output is stable for the same objects. With
    ``keep_reached_roots=False`` (roots chosen by selector, not by name) a root that another root reaches — a pool's
    VM, a replica set's VMI — stops being a root and appears once, under what it belongs to. Targets of the
    ``unread_kinds`` ((group, Kind) pairs) are recorded in ``graph.unread`` without asking the index, so a user
    without access to them (Secrets, say) can still walk the graph.
    """
    root_list = list(roots)
    graph = Graph(roots=[ref for ref, _ in root_list])
    queue: deque[Ref] = deque()
    unread: set[Ref] = set()  # graph.unread keeps the order; this answers "already there?" for thousands of Secrets
    for ref, obj in root_list:
        if ref not in graph.objects:
            graph.objects[ref] = obj
            queue.append(ref)
    while queue:
        ref = queue.popleft()
        obj = graph.objects[ref]
        if obj is None:
            continue
        graph.notes += [GraphNote(ref, note.path, note.what, note.advice) for note in uncaptured_data(obj)]
        for edge in edges_of(obj, index):
            graph.edges.append(GraphEdge(ref, edge.target, edge.path, edge.optional))
            if (edge.target.group, edge.target.kind) in unread_kinds:
                if edge.target not in unread:
                    unread.add(edge.target)
                    graph.unread.append(edge.target)
            elif edge.target not in graph.objects:
                graph.objects[edge.target] = index.get(edge.target)
                queue.append(edge.target)
    if not keep_reached_roots:
        reached = {e.target for e in graph.edges}
        graph.roots = [r for r in graph.roots if r not in reached]
    return graph


__all__ = ["Edge", "Graph", "GraphEdge", "GraphNote", "walk"]
