"""What the rules need to know about the target cluster, read through ``kubectl_kvbackup.cluster.Connection``.

Every lookup is bounded by a short request timeout and turns any failure into ``LookupFailed``, which the
admission core answers by skipping that rule's change (never by denying the restore). Answers are cached briefly:
admission requests of one restore come in bursts over the same namespaces, owners and VMs. The identities in use
come from an ``IdentityIndex`` kept by watch, and the values held by this pod's reviews (``identity_index``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any, Callable, Generic, TypeVar

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.cluster import ApiError, Connection, ConnectionOptions, KubeError, connect, object_path
from kubectl_kvbackup.kinds import Kind, group_of

from .admission import IdentitiesUnchecked, InUse, LookupFailed
from .identity_index import IdentityIndex, Reservations, owner_of

Obj = dict[str, Any]
T = TypeVar("T")
#: seconds for one API request; the webhook's own timeout (timeoutSeconds) is 5 s
REQUEST_TIMEOUT = 2.0
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

    def __init__(self, make_connection: Callable[[], Connection], ttl: float = 5.0):
        self._make_connection = make_connection
        self._connection: Connection | None = None
        self._connect_lock = threading.Lock()
        self._namespaces: _TTLCache[dict[str, str]] = _TTLCache(ttl)
        self._owner_uids: _TTLCache[str] = _TTLCache(ttl)
        self.index = IdentityIndex(make_connection)  # started by the app, or by the first identity lookup
        self._reservations: Reservations | None = None
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

    def identities(self, obj: Obj, request_uid: str, dry_run: bool) -> InUse:
        """The values in use (read-only): the index's, and those other reviews of this pod hold of the ones ``obj``
        fixes; unless ``dry_run``, those of them still free are held for ``obj`` in the same step."""
        in_use = self.index.start().values()
        try:
            held = self._held().claim(owner_of(obj, request_uid), rules.identity_values(obj), in_use, hold=not dry_run)
        except (sqlite3.Error, OSError) as error:
            raise IdentitiesUnchecked(f"the values held by this restore could not be read: {error}", in_use) from None
        macs, serials, uuids = (rules.TakenValues(mine, theirs) if theirs else mine
                                for mine, theirs in zip(in_use, held))
        values = (macs, serials, uuids)
        unchecked = self.index.unchecked_reason()
        if unchecked:
            raise IdentitiesUnchecked(unchecked, values)
        return values

    def reserve_identities(self, obj: Obj, request_uid: str, dry_run: bool) -> None:
        """Hold the values ``obj`` now uses (those the rules handed out among them) until the watch shows it."""
        if dry_run:
            return
        try:
            self._held().hold(owner_of(obj, request_uid), rules.identity_values(obj))
        except (sqlite3.Error, OSError) as error:
            raise LookupFailed(f"could not hold the values handed out ({error})") from None

    def _held(self) -> Reservations:
        with self._connect_lock:
            if self._reservations is None:
                self._reservations = Reservations.for_pod()
            return self._reservations


class _Missing(Exception):
    pass


def _uid_or_raise(found: Obj | None) -> str:
    uid = ((found or {}).get("metadata") or {}).get("uid")
    if not uid:
        raise _Missing
    return uid
