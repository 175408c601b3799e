"""The MAC addresses, firmware serials and firmware UUIDs in use in the cluster, kept by list + watch.

``IdentityIndex`` is what client-go's reflector and informer do, for the one question the collision policies ask:
a paginated LIST of VirtualMachines and VirtualMachineInstances (cluster-wide) gives the state at one
resourceVersion, then a WATCH from that resourceVersion (with bookmarks, so an idle watch still advances) keeps it
current. A watch whose resourceVersion has been compacted away (``410 Gone``, as an ERROR event or as the answer)
is followed by a fresh LIST; any other failure by a retry with exponential backoff (client-go's reflector: 800 ms
doubling to 30 s, with as much jitter). One thread per kind and worker process; the threads of the worker's
requests read the index, never the API server. KubeMacPool keeps its MAC map in memory for the same reason
(k8snetworkplumbingwg/kubemacpool pkg/pool-manager/virtualmachine_pool.go initVirtualMachineMap lists the VMs once
at start; its webhook and its VM controller, fed by a watch, keep the map from then on).

Bookkeeping is per object, so an update that changes a MAC frees the old one and a deletion frees all of its values;
a value used by several objects (a VM and its VMI) is counted, and freed only with the last of them. Only objects
that use a value are kept, as a flat tuple ``(category, value, category, value…)`` under ``namespace/name``; values
are interned, so a VM and its VMI share one string. ``benchmarks/bench_identity_index.py`` measures it.

``Reservations`` closes the gap the watch leaves: a VM admitted a moment ago is not in any worker's index until the
watch delivers it, and the next VM of the same restore may reach another gunicorn worker. Each value a review lets
through or hands out is held at once in a store that every worker of the pod shares, expiring after
``RESERVATION_TTL`` (the object may never be created: another webhook or the API server may refuse it).

The store is SQLite in the pod's memory-backed /tmp, not a hand-made file under ``fcntl`` locks: checking the values
an object wants and holding the free ones must be one step across processes, which ``BEGIN IMMEDIATE`` gives (one
writer at a time, a worker killed mid-step rolls back), expiry and lookups by value are indexed queries rather than
a scan and rewrite of the whole file, and it is in the standard library. Only the values an object fixes are looked
up, so a review reads a few rows whatever the size of the restore.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from typing import Callable

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.cluster import ApiError, Connection, KubeError, collection_path
from kubectl_kvbackup.kinds import Kind

from .admission import InUse

log = logging.getLogger("kvbackup_webhook")
INDEXED_KINDS = (kinds.VM, kinds.VMI)
#: kube-apiserver's default page size for kubectl; 500 VMs are a few MB of JSON
PAGE_SIZE = 500
#: client-go's reflector (kubernetes staging/src/k8s.io/client-go/tools/cache/reflector.go, minWatchTimeout times
#: 1 + rand) ends each watch after 5 to 10 minutes at random, so clients do not all reconnect at once
WATCH_SECONDS = (300, 600)
#: kube-apiserver sends a bookmark about once a minute on an idle watch: silence beyond this is a broken connection
SILENCE_LIMIT = 90.0
#: one page of the initial list, at most: a page that hangs is a broken connection, retried with backoff
PAGE_TIMEOUT = 60.0
#: the same reflector's backoff: NewExponentialBackoffManager(800ms, 30s, ..., factor 2.0, jitter 1.0)
BACKOFF_FIRST, BACKOFF_MAX = 0.8, 30.0
#: a watch the server ends this soon without a single event is a failure (client-go's reflector: "very short watch"),
#: so a server or proxy that closes every watch at once gets backoff, not a loop of requests
SHORT_WATCH = 1.0
#: a watch down for longer than this makes answers "unchecked": a VM created meanwhile would be missed
STALE_AFTER = 10.0
#: seconds a held value outlives its review: long enough for the object to reach every worker's watch
RESERVATION_TTL = 120.0
#: the environment variable naming the reservation store shared by the workers of one pod
RESERVATIONS_ENV = "KVBACKUP_WEBHOOK_RESERVATIONS"


class _Expired(Exception):
    """The watch's resourceVersion was compacted: only a new LIST can continue."""


class IdentityIndex:
    """``start()`` begins listing and watching in background threads; ``values()`` answers from memory."""

    def __init__(self, make_connection: Callable[[], Connection], clock: Callable[[], float] = time.monotonic):
        self._make_connection = make_connection
        self._clock = clock
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, tuple]] = {kind.kind: {} for kind in INDEXED_KINDS}
        self._counts: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        self._listed: set[str] = set()
        self._down_since: dict[str, float] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._on_synced: list[Callable[[], None]] = []
        self.relists = 0  # LISTs made, the first ones included (tests and the benchmark read it)

    def start(self) -> "IdentityIndex":
        with self._lock:
            if self._threads:
                return self
            for kind in INDEXED_KINDS:
                thread = threading.Thread(target=self._run, args=(kind,), name=f"identity-index-{kind.plural}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        """The threads end at their next event or bookmark (or failure): daemons, they never hold up an exit."""
        self._stopping.set()

    def on_synced(self, callback: Callable[[], None]) -> None:
        """``callback()`` once every kind has been listed: at once if that is so already, else from the thread of
        the last first LIST."""
        with self._lock:
            if len(self._listed) < len(INDEXED_KINDS):
                self._on_synced.append(callback)
                return
        callback()

    @property
    def synced(self) -> bool:
        with self._lock:
            return len(self._listed) == len(INDEXED_KINDS)

    def unchecked_reason(self) -> str | None:
        """Why an answer may miss values in use (not listed yet, or a watch down too long); None when current."""
        now = self._clock()
        with self._lock:
            missing = [kind.kind for kind in INDEXED_KINDS if kind.kind not in self._listed]
            down = [(kind, now - since) for kind, since in self._down_since.items() if now - since > STALE_AFTER]
        if missing:
            return f"the identity index has not finished listing {' and '.join(f'{kind}s' for kind in missing)} yet"
        if down:
            return "the identity index is stale: " + ", ".join(
                f"the watch of {kind}s has been failing for {seconds:.0f}s" for kind, seconds in down)
        return None

    def values(self) -> InUse:
        """The values in use: live, read-only views, so a review copies nothing of the index (membership tests are
        atomic under the GIL; iterating one while the watch changes it would fail, and no rule iterates them)."""
        return self._counts[0].keys(), self._counts[1].keys(), self._counts[2].keys()

    def object_count(self) -> int:
        with self._lock:
            return sum(len(objects) for objects in self._objects.values())

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    @staticmethod
    def _entry(kind: Kind, obj: dict) -> tuple:
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        return tuple(item for category, found in enumerate(rules.identity_values(obj)) for value in sorted(found)
                     for item in (category, sys.intern(value)))

    @staticmethod
    def _key(obj: dict) -> str:
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def _count(self, entry: tuple, step: int) -> None:
        for i in range(0, len(entry), 2):
            counts = self._counts[entry[i]]
            left = counts.get(entry[i + 1], 0) + step
            if left > 0:
                counts[entry[i + 1]] = left
            else:
                del counts[entry[i + 1]]

    def _put(self, kind: Kind, obj: dict) -> None:
        entry, key = self._entry(kind, obj), self._key(obj)
        with self._lock:
            objects = self._objects[kind.kind]
            old = objects.get(key, ())
            if old == entry:
                return  # most updates (a VMI's status, say) leave the values as they were
            # counted before the old ones are freed: a value the object keeps never vanishes from the live views
            self._count(entry, 1)
            self._count(old, -1)
            if entry:
                objects[key] = entry
            else:
                objects.pop(key, None)

    def _delete(self, kind: Kind, obj: dict) -> None:
        key = self._key(obj)
        with self._lock:
            self._count(self._objects[kind.kind].pop(key, ()), -1)

    def _replace(self, kind: Kind, objects: dict[str, tuple]) -> None:
        with self._lock:
            for entry in objects.values():  # the new state first, as in _put
                self._count(entry, 1)
            for entry in self._objects[kind.kind].values():
                self._count(entry, -1)
            self._objects[kind.kind] = objects
            self._listed.add(kind.kind)
            callbacks: list[Callable[[], None]] = []
            if len(self._listed) == len(INDEXED_KINDS):
                callbacks, self._on_synced = self._on_synced, []
        for callback in callbacks:
            callback()

    # -- list and watch --------------------------------------------------------------------------------------------

    def _run(self, kind: Kind) -> None:
        connection: Connection | None = None
        version: str | None = None
        delay = BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                if connection is None:
                    connection = self._make_connection()
                    connection.request_timeout = connection.request_timeout or PAGE_TIMEOUT
                if version is None:
                    version = self._list(kind, connection)
                    self._healthy(kind)
                watched_from, started = version, self._clock()
                version = self._watch(kind, connection, version)
                if version == watched_from and self._clock() - started < SHORT_WATCH:
                    raise KubeError(f"the watch of {kind.plural} ended at once without an event")
                delay = BACKOFF_FIRST
            except _Expired:
                log.info("identity index: %s watch expired, listing again", kind.plural)
                version = None
            except Exception as error:  # whatever it was, the thread lives on and the index reports itself stale
                with self._lock:
                    self._down_since.setdefault(kind.kind, self._clock())
                log.warning("identity index: %s list/watch failed (%s); retrying in %.1fs", kind.plural, error, delay,
                            exc_info=not isinstance(error, KubeError))
                self._stopping.wait(delay * random.uniform(1.0, 2.0))
                delay = min(delay * 2, BACKOFF_MAX)

    def _healthy(self, kind: Kind) -> None:
        with self._lock:
            self._down_since.pop(kind.kind, None)

    def _list(self, kind: Kind, connection: Connection) -> str:
        """Every object at one resourceVersion, in pages; a page whose continue token expired starts it over."""
        path = collection_path(kind, kind.version, None)
        with self._lock:
            self.relists += 1
        while True:
            objects: dict[str, tuple] = {}
            token, version = "", ""
            try:
                while True:
                    query = [("limit", PAGE_SIZE), *([("continue", token)] if token else [])]
                    page = connection.request("GET", path, query)
                    for item in page.get("items") or []:
                        entry = self._entry(kind, item)
                        if entry:
                            objects[self._key(item)] = entry
                    metadata = page.get("metadata") or {}
                    version, token = metadata.get("resourceVersion", ""), metadata.get("continue") or ""
                    if not token:
                        break
            except ApiError as error:
                if error.status == 410:
                    continue  # the snapshot is gone: a consistent list must start again
                raise
            self._replace(kind, objects)
            return version

    def _watch(self, kind: Kind, connection: Connection, version: str) -> str:
        """Changes after ``version`` until the server ends the watch; the resourceVersion reached."""
        query = [("resourceVersion", version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", random.randint(*WATCH_SECONDS))]
        try:
            for event in connection.watch(collection_path(kind, kind.version, None), query, SILENCE_LIMIT):
                if self._stopping.is_set():
                    break
                kind_of_event, obj = event.get("type"), event.get("object") or {}
                if kind_of_event == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired
                    raise KubeError(f"the watch of {kind.plural} failed: {obj.get('message')}")
                if kind_of_event in ("ADDED", "MODIFIED"):
                    self._put(kind, obj)
                elif kind_of_event == "DELETED":
                    self._delete(kind, obj)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                self._healthy(kind)
        except ApiError as error:
            if error.status == 410:
                raise _Expired from None
            raise
        return version


class Reservations:
    """Values held by the reviews of a pod's workers, in a SQLite file they share (see the module docstring)."""

    def __init__(self, path: str, ttl: float = RESERVATION_TTL, clock: Callable[[], float] = time.time):
        self.path, self._ttl, self._clock = path, ttl, clock
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS held (category INTEGER, value TEXT, owner TEXT, expires REAL, "
                       "PRIMARY KEY (category, value)) WITHOUT ROWID")
            db.execute("CREATE INDEX IF NOT EXISTS held_expires ON held (expires)")

    @classmethod
    def for_pod(cls) -> "Reservations":
        """The store the gunicorn master named for its workers, else one of this process's own."""
        path = os.environ.get(RESERVATIONS_ENV) or create_store_file()
        return cls(path)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # autocommit, so BEGIN IMMEDIATE below is the only transaction; the file lives in memory (tmpfs)
            db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            self._local.db = db
        return db

    def claim(self, owner: str, wanted: InUse, in_use: InUse, hold: bool) -> InUse:
        """In one step across workers: which of ``wanted`` others hold, and (``hold``) hold for ``owner`` those that
        neither others hold nor ``in_use`` lists, since the rules will let them through."""
        db, now = self._db(), self._clock()
        rows = [(category, value) for category, found in enumerate(wanted) for value in found]
        held: tuple[set[str], set[str], set[str]] = (set(), set(), set())
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM held WHERE expires <= ?", (now,))
            for category, value in rows:
                found = db.execute("SELECT owner FROM held WHERE category = ? AND value = ?",
                                   (category, value)).fetchone()
                if found is not None and found[0] != owner:
                    held[category].add(value)
                elif hold and value not in in_use[category]:
                    db.execute("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)",
                               (category, value, owner, now + self._ttl))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return held

    def hold(self, owner: str, values: InUse) -> None:
        """Hold what a review handed out, unless another owner took a value in between."""
        now = self._clock()
        rows = [(category, value, owner, now + self._ttl) for category, found in enumerate(values) for value in found]
        self._db().executemany(
            "INSERT INTO held VALUES (?, ?, ?, ?) ON CONFLICT (category, value) DO UPDATE SET "
            "expires = excluded.expires WHERE owner = excluded.owner", rows)


def create_store_file(folder: str | None = None) -> str:
    """A new, private (0600) file for a reservation store, in the memory-backed tmp folder."""
    handle, path = tempfile.mkstemp(prefix="kvbackup-reservations-", suffix=".sqlite",
                                    dir=folder or os.environ.get("KVBACKUP_WEBHOOK_TMP_DIR") or None)
    os.close(handle)
    return path


def remove_store_file(path: str) -> None:
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def owner_of(obj: dict, request_uid: str) -> str:
    """Who holds a value: the object by namespace and name (a VM and the VMI it starts share it), or for a name the
    server is yet to generate, the admission request."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta['name']}" if meta.get("name") else f"request {request_uid}"

