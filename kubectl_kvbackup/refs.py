"""Graph nodes: ``Ref = (group, kind, namespace, name)``, as the integration guide names them."""

from __future__ import annotations

from typing import Any, NamedTuple

from .kinds import Kind, group_of, kind_for, known


class Ref(NamedTuple):
    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, k: Kind, namespace: str, name: str) -> "Ref":
        return cls(k.group, k.kind, namespace if k.namespaced else "", name)

    def is_a(self, k: Kind) -> bool:
        return (self.group, self.kind) == (k.group, k.kind)

    def to_dict(self) -> dict[str, str]:
        return self._asdict()

    @property
    def kind_info(self) -> Kind:
        return kind_for(self.group, self.kind)

    def display_name(self) -> str:
        """``kind.group/name`` as ``kubectl get -o name`` prints it (``pod/x``, ``virtualmachine.kubevirt.io/vm1``)."""
        prefix = f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()
        return f"{prefix}/{self.name}"

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.display_name().split('/')[0]}/{where}{self.name}"


def ref_of(obj: dict[str, Any]) -> Ref:
    """The Ref of a manifest or API object."""
    meta = obj.get("metadata") or {}
    group = group_of(obj.get("apiVersion", ""))
    kind = obj.get("kind", "")
    namespace = meta.get("namespace", "") or ""
    if known(group, kind) and not kind_for(group, kind).namespaced:
        namespace = ""
    return Ref(group, kind, namespace, meta.get("name", ""))
