"""What the rules need to know about the target cluster, read through ``kubectl_kvbackup.cluster.Connection``.

Every lookup is bounded by a short request timeout and turns any failure into ``LookupFailed``, which the
admission core answers by skipping that rule's change (never by denying the restore). Answers are cached briefly:
admission requests of one restore come in bursts over the same namespaces, owners and VMs.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Generic, TypeVar

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.cluster import ApiError, Connection, ConnectionOptions, KubeError, collection_path, \
    connect, object_path
from kubectl_kvbackup.kinds import Kind, group_of

from .admission import LookupFailed

Obj = dict[str, Any]
T = TypeVar("T")
#: seconds for one API request; the webhook's own timeout (timeoutSeconds) is 5 s
REQUEST_TIMEOUT = 2.0
#: a listing of every VM and VMI may take several pages; past this it is abandoned
IDENTITY_DEADLINE = 3.0
_KNOWN = {(k.group, k.kind): k for k in kinds.ALL_KINDS}


class _TTLCache(Generic[T]):
    #: past this many entries, expired ones are swept (owners of rolling ReplicaSets would pile up otherwise)
    SWEEP_ABOVE = 1024

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self._ttl, self._clock = ttl, clock
        self._entries: dict[Any, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        return self.refresh(key, load)

    def refresh(self, key: Any, load: Callable[[], T]) -> T:
        """Load now, whatever is cached."""
        value = load()  # outside the lock: a slow lookup must not hold up other requests
        now = self._clock()
        with self._lock:
            self._entries[key] = (now + self._ttl, value)
            if len(self._entries) > self.SWEEP_ABOVE:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        return value


class ClusterLookups:
    """Lookups against the API server; the connection is made on first use so the app starts without a cluster."""

    def __init__(self, make_connection: Callable[[], Connection], ttl: float = 5.0, identity_ttl: float = 15.0):
        self._make_connection = make_connection
        self._connection: Connection | None = None
        self._connect_lock = threading.Lock()
        self._namespaces: _TTLCache[dict[str, str]] = _TTLCache(ttl)
        self._owner_uids: _TTLCache[str] = _TTLCache(ttl)
        self._identities: _TTLCache[tuple[set[str], set[str], set[str]]] = _TTLCache(identity_ttl)
        self._plurals: _TTLCache[Kind | None] = _TTLCache(float("inf"))  # discovery does not change under us

    @classmethod
    def from_environment(cls) -> "ClusterLookups":
        """In-cluster configuration, or the kubeconfig named by KVBACKUP_WEBHOOK_KUBECONFIG (tests, local runs)."""
        kubeconfig = os.environ.get("KVBACKUP_WEBHOOK_KUBECONFIG")
        return cls(lambda: connect(ConnectionOptions(kubeconfig=kubeconfig or None, request_timeout=REQUEST_TIMEOUT)))

    def _conn(self) -> Connection:
        with self._connect_lock:
            if self._connection is None:
                try:
                    self._connection = self._make_connection()
                except KubeError as error:
                    raise LookupFailed(str(error)) from None
            return self._connection

    def _get(self, path: str) -> Obj | None:
        try:
            return self._conn().request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise LookupFailed(str(error), forbidden=error.status == 403) from None
        except KubeError as error:
            raise LookupFailed(str(error)) from None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        def load() -> dict[str, str]:
            found = self._get(object_path(kinds.NAMESPACE, "v1", "", namespace))
            return dict(((found or {}).get("metadata") or {}).get("labels") or {})
        return self._namespaces.get(namespace, load)

    def _kind(self, group: str, version: str, kind: str) -> Kind | None:
        """The resource of an owner's kind: from kvbackup's table, else from discovery (any owner kind works)."""
        if (group, kind) in _KNOWN:
            return _KNOWN[(group, kind)]

        def discover() -> Kind | None:
            listing = self._get(f"/apis/{group}/{version}" if group else f"/api/{version}") or {}
            for resource in listing.get("resources") or []:
                if resource.get("kind") == kind and "/" not in resource.get("name", ""):
                    return Kind(group, version, kind, resource["name"], bool(resource.get("namespaced")))
            return None
        return self._plurals.get((group, version, kind), discover)

    def owner_uid(self, owner: Obj, namespace: str) -> str | None:
        api_version, kind_name, name = owner.get("apiVersion", ""), owner.get("kind", ""), owner.get("name", "")
        group, version = group_of(api_version), api_version.rpartition("/")[2]
        kind = self._kind(group, version, kind_name)
        if kind is None or not name:
            return None
        path = object_path(kind, version, namespace if kind.namespaced else "", name)
        def load() -> str:
            return _uid_or_raise(self._get(path))

        try:  # only existing owners are cached (the load raises otherwise): a missing one may be restored next
            uid = self._owner_uids.get(path, load)
            if uid != owner.get("uid"):  # the owner may have been recreated since it was cached: ask again
                uid = self._owner_uids.refresh(path, load)
            return uid
        except _Missing:
            return None

    def pvc(self, namespace: str, name: str) -> Obj | None:
        return self._get(object_path(kinds.PVC, "v1", namespace, name))

    def identities(self) -> tuple[set[str], set[str], set[str]]:
        return self._identities.get("all", self._list_identities)

    def _list_identities(self) -> tuple[set[str], set[str], set[str]]:
        deadline = time.monotonic() + IDENTITY_DEADLINE
        macs: set[str] = set()
        serials: set[str] = set()
        uuids: set[str] = set()
        try:
            for kind in (kinds.VM, kinds.VMI):
                for item in self._conn().list_pages(collection_path(kind, kind.version, None)):
                    item.setdefault("apiVersion", kind.api_version)
                    item.setdefault("kind", kind.kind)
                    found = rules.identity_values(item)
                    macs |= found[0]
                    serials |= found[1]
                    uuids |= found[2]
                    if time.monotonic() > deadline:
                        raise LookupFailed(f"listing VMs and VMIs took longer than {IDENTITY_DEADLINE:.0f}s")
        except KubeError as error:
            raise LookupFailed(str(error)) from None
        return macs, serials, uuids


class _Missing(Exception):
    pass


def _uid_or_raise(found: Obj | None) -> str:
    uid = ((found or {}).get("metadata") or {}).get("uid")
    if not uid:
        raise _Missing
    return uid
