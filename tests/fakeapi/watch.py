"""WATCH (``?watch=1``) as kube-apiserver streams it: one JSON object per line, ``{"type", "object"}``.

Sources (kubernetes/kubernetes): staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go (the stream and its
framing), staging/src/k8s.io/apiserver/pkg/storage/cacher/cacher.go and watch_cache.go (initial events without a
resourceVersion, 410 for one older than the history, bookmarks), staging/src/k8s.io/apiserver/pkg/storage/
cacher/cache_watcher.go (an object that stops matching a selector is sent as DELETED).

Not modelled: sendInitialEvents/resourceVersionMatch, the server's randomised timeout (a watch without
``timeoutSeconds`` runs until the client goes or the server stops), field selectors other than name and namespace.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from kubectl_kvbackup.selectors import SelectorError, parse_selector

from .status import ApiStatus, bad_request
from .storage import Event, Store, field_selector
from .types import GO_TRUE, ResourceType

Obj = dict[str, Any]
#: how long a watch that asked for bookmarks stays idle before one is sent (kube-apiserver: about a minute)
BOOKMARK_IDLE_SECONDS = 1.0
_POLL_SECONDS = 0.1


def stream(store: Store, rt: ResourceType, namespace: str | None, query: dict[str, str],
           stopping: Any) -> Iterator[Obj]:
    """The watch events of one request; ``stopping()`` is true once the server shuts down."""
    try:
        selector = parse_selector(query.get("labelSelector", ""))
    except SelectorError as error:
        raise bad_request(f"unable to parse requirement: {error}") from None
    field_matches = field_selector(query.get("fieldSelector", ""))
    given = query.get("resourceVersion", "")
    if given and not given.isdigit():
        raise bad_request(f'resourceVersion: Invalid value: "{given}": must be a non-negative integer')
    timeout = query.get("timeoutSeconds", "")
    deadline = time.monotonic() + int(timeout) if timeout.isdigit() else None
    bookmarks = query.get("allowWatchBookmarks") in GO_TRUE
    type_key = (rt.group, rt.kind)

    def matches(obj: Obj | None) -> bool:
        meta = (obj or {}).get("metadata") or {}
        return obj is not None and (namespace is None or meta.get("namespace") == namespace) and \
            selector.matches(meta.get("labels")) and field_matches(obj)

    def bookmark(rv: int) -> Obj:
        return {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.group_version,
                                               "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}}

    return _events(store, rt, type_key, given, matches, deadline, bookmarks, bookmark, stopping)


def _events(store: Store, rt: ResourceType, type_key: tuple[str, str], given: str, matches: Any,
            deadline: float | None, bookmarks: bool, bookmark: Any, stopping: Any) -> Iterator[Obj]:
    with store.lock:
        if given in ("", "0"):
            # "get state and start at most recent": every current object as ADDED, then the changes
            rv = store.resource_version
            initial = [o for o in store.objects(rt) if matches(o)]
        else:
            rv, initial = int(given), []
            if store.events_since(type_key, rv) is None:
                initial = None
    if initial is None:
        yield _error(ApiStatus(410, "Expired", f"too old resource version: {given} ({store.compacted})"))
        return
    for obj in initial:
        yield {"type": "ADDED", "object": obj}
    idle_since = time.monotonic()
    while not stopping() and (deadline is None or time.monotonic() < deadline):
        with store.changed:
            events = store.events_since(type_key, rv)
            if events == []:
                store.changed.wait(_POLL_SECONDS)
                events = store.events_since(type_key, rv)
            head = store.resource_version  # every event of this type up to head is in events
        if events is None:
            yield _error(ApiStatus(410, "Expired", f"too old resource version: {rv} ({store.compacted})"))
            return
        for event in events:
            sent = _as_seen(event, matches)
            if sent is not None:
                idle_since = time.monotonic()
                yield sent
        rv = max(rv, head)
        if bookmarks and time.monotonic() - idle_since >= BOOKMARK_IDLE_SECONDS:
            idle_since = time.monotonic()
            yield bookmark(rv)
    if bookmarks and not stopping():
        yield bookmark(rv)


def _as_seen(event: Event, matches: Any) -> Obj | None:
    """The event as a watcher with a selector sees it: entering the selection is ADDED, leaving it DELETED."""
    now, before = matches(event.object) and event.type != "DELETED", matches(event.old)
    if event.type == "DELETED":
        return {"type": "DELETED", "object": event.object} if before else None
    if now and not before:
        return {"type": "ADDED", "object": event.object}
    if now:
        return {"type": "MODIFIED", "object": event.object}
    if before:
        return {"type": "DELETED", "object": event.object}
    return None


def _error(status: ApiStatus) -> Obj:
    return {"type": "ERROR", "object": status.body()}
