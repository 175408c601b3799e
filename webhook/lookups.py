"""What the rules need to know about the target cluster, read through ``kubectl_kvbackup.cluster.Connection``.

Every lookup ends by the request's deadline (each API call's timeout is the time left) and turns any failure into
``LookupFailed``, which the admission core answers by skipping that rule's change (never by denying the restore).
Answers are cached briefly: admission requests of one restore come in bursts over the same namespaces, owners and
VMs. The identities in use come from an ``IdentityIndex`` kept by watch, and the values held by this pod's reviews
(``identity_index``): no API call in the request path.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Generic, TypeVar

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.cluster import ApiError, Connection, ConnectionOptions, KubeError, connect, object_path
from kubectl_kvbackup.kinds import Kind, group_of

from .admission import IdentitiesUnchecked, InUse, LookupFailed, owner_problem
from .identity_index import IdentityIndex, Reservations, owner_of

Obj = dict[str, Any]
T = TypeVar("T")
#: an API call with less time left than this is not started: it could not answer anyway
MIN_CALL_TIME = 0.05
_KNOWN = {(k.group, k.kind): k for k in kinds.ALL_KINDS}


class _TTLCache(Generic[T]):
    """Answers kept ``ttl`` seconds (``missing_ttl`` for "not there"), at most ``size`` of them: owners are
    tenant-chosen names, so an unbounded cache would grow with every name anyone invents."""

    def __init__(self, ttl: float, missing_ttl: float | None = None, size: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self._ttl, self._clock, self._size = ttl, clock, size
        self._missing_ttl = ttl if missing_ttl is None else missing_ttl
        self._entries: OrderedDict[Any, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], T], stale: Callable[[T], bool] = lambda value: False) -> T:
        """The cached answer, else ``load()``; a cached answer for which ``stale`` says so is loaded again."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now and not stale(entry[1]):
            return entry[1]
        value = load()  # outside the lock: a slow lookup must not hold up other requests
        now = self._clock()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (now + (self._missing_ttl if value is None else self._ttl), value)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


@dataclasses.dataclass
class _UntilDeadline(Connection):
    """The webhook's connection for one request: every call (each page of a listing too) gets the time left before
    the request's deadline as its timeout, and none starts once it has passed."""

    deadline: float = 0.0

    def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        left = self.deadline - time.monotonic()
        if left < MIN_CALL_TIME:
            raise LookupFailed("the API server is slow: the request's time for lookups is spent")
        self.request_timeout = left
        return super().request(*args, **kwargs)


class ClusterLookups:
    """Lookups against the API server; the connection is made on first use so the app starts without a cluster."""

    def __init__(self, make_connection: Callable[[], Connection], ttl: float = 5.0, missing_ttl: float = 2.0,
                 discovery_ttl: float = 30.0):
        self._make_connection = make_connection
        self._connection: Connection | None = None
        self._connect_lock = threading.Lock()
        self._namespaces: _TTLCache[dict[str, str]] = _TTLCache(ttl)
        # an owner not there yet may be restored next: "missing" is kept only briefly
        self._owner_uids: _TTLCache[str | None] = _TTLCache(ttl, missing_ttl)
        self.index = IdentityIndex(make_connection)  # started by the app, or by the first identity lookup
        self._reservations: Reservations | None = None
        # a kind's resource does not change, but a CRD installed later must be found
        self._plurals: _TTLCache[Kind | None] = _TTLCache(float("inf"), discovery_ttl, size=1024)

    @classmethod
    def from_environment(cls) -> "ClusterLookups":
        """In-cluster configuration, or the kubeconfig named by KVBACKUP_WEBHOOK_KUBECONFIG (tests, local runs)."""
        kubeconfig = os.environ.get("KVBACKUP_WEBHOOK_KUBECONFIG")
        return cls(lambda: connect(ConnectionOptions(kubeconfig=kubeconfig or None)))

    def _conn(self, deadline: float) -> _UntilDeadline:
        with self._connect_lock:
            if self._connection is None:
                try:
                    self._connection = self._make_connection()
                except KubeError as error:
                    raise LookupFailed(str(error)) from None
            connection = self._connection
        fields = {f.name: getattr(connection, f.name) for f in dataclasses.fields(connection) if f.init}
        return _UntilDeadline(**fields, deadline=deadline)

    def _get(self, path: str, deadline: float) -> Obj | None:
        try:
            return self._conn(deadline).request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise LookupFailed(str(error), forbidden=error.status == 403) from None
        except KubeError as error:
            raise LookupFailed(str(error)) from None

    def namespace_labels(self, namespace: str, deadline: float) -> dict[str, str]:
        def load() -> dict[str, str]:
            found = self._get(object_path(kinds.NAMESPACE, "v1", "", namespace), deadline)
            return dict(((found or {}).get("metadata") or {}).get("labels") or {})
        return self._namespaces.get(namespace, load)

    def _kind(self, group: str, version: str, kind: str, deadline: float) -> Kind | None:
        """The resource of an owner's kind: from kvbackup's table, else from discovery (any owner kind works)."""
        if (group, kind) in _KNOWN:
            return _KNOWN[(group, kind)]

        def discover() -> Kind | None:
            listing = self._get(f"/apis/{group}/{version}" if group else f"/api/{version}", deadline) or {}
            for resource in listing.get("resources") or []:
                if resource.get("kind") == kind and "/" not in resource.get("name", ""):
                    return Kind(group, version, kind, resource["name"], bool(resource.get("namespaced")))
            return None
        return self._plurals.get((group, version, kind), discover)

    def owner_uid(self, owner: Obj, namespace: str, deadline: float) -> str | None:
        if owner_problem(owner):  # never a path built from what is not a name
            return None
        api_version, kind_name, name = owner.get("apiVersion", ""), owner.get("kind", ""), owner.get("name", "")
        group, version = group_of(api_version), api_version.rpartition("/")[2]
        kind = self._kind(group, version, kind_name, deadline)
        if kind is None or not name:
            return None
        path = object_path(kind, version, namespace if kind.namespaced else "", name)

        def load() -> str | None:
            return ((self._get(path, deadline) or {}).get("metadata") or {}).get("uid") or None
        # a cached UID that differs from the one named may be of an owner since recreated: asked again, once
        return self._owner_uids.get(path, load, stale=lambda uid: uid is not None and uid != owner.get("uid"))

    def pvc(self, namespace: str, name: str, deadline: float) -> Obj | None:
        return self._get(object_path(kinds.PVC, "v1", namespace, name), deadline)

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

