"""The restore-rules admission webhook: KubeVirt's restore rules applied cluster-side to restores by any tool."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from kubectl_kvbackup.rules import DEFAULT_SYSTEM_NAMESPACES, FirmwarePolicy, IdentityPolicies, MacPolicy

from . import admission
from .lookups import ClusterLookups
from .metrics import Metrics

#: seconds /readyz waits for the identity index to sync before it reports ready anyway (and warns)
DEFAULT_INDEX_SYNC_TIMEOUT = 120.0
#: kube-apiserver refuses request bodies over 3 MiB, so no genuine AdmissionReview is larger
DEFAULT_MAX_BYTES = 3 * 1024 * 1024


#: bodies larger than this (or of unknown size) are read and judged one at a time per worker: parsing a 3 MiB body
#: can take 80 MiB (see benchmarks/bench_webhook.py)
LARGE_BODY = 256 * 1024


#: an oversized body is still read (up to this many times the limit) so the client gets the 413 instead of a reset
DRAIN_LIMIT_FACTOR = 4


def _drain(stream: Any, length: int) -> None:
    while stream is not None and length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The Flask application. ``config`` overrides: MAC_POLICY (keep | regenerate-on-collision | regenerate |
    clear), FIRMWARE_POLICY (keep | regenerate-on-collision | regenerate), MAX_CONTENT_LENGTH (bytes),
    SYSTEM_NAMESPACES (where KubeVirt and CDI run: comma-separated), METRICS_PORT (the local port that serves
    /metrics and nothing else; unset: every path on any port), LOOKUPS (an ``admission.Lookups``; default: the
    cluster, see ``lookups``), INDEX_SYNC_TIMEOUT (seconds /readyz waits for the identity index, see
    ``identity_index``)."""
    app = Flask("kvbackup_webhook")
    app.config.update(
        MAC_POLICY=os.environ.get("KVBACKUP_WEBHOOK_MAC_POLICY", MacPolicy.REGENERATE_ON_COLLISION.value),
        FIRMWARE_POLICY=os.environ.get("KVBACKUP_WEBHOOK_FIRMWARE_POLICY",
                                       FirmwarePolicy.REGENERATE_ON_COLLISION.value),
        MAX_CONTENT_LENGTH=int(os.environ.get("KVBACKUP_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES)),
        SYSTEM_NAMESPACES=os.environ.get("KVBACKUP_WEBHOOK_SYSTEM_NAMESPACES", ",".join(DEFAULT_SYSTEM_NAMESPACES)),
        METRICS_PORT=os.environ.get("KVBACKUP_WEBHOOK_METRICS_PORT"),
        LOOKUPS=None,
        INDEX_SYNC_TIMEOUT=float(os.environ.get("KVBACKUP_WEBHOOK_INDEX_SYNC_TIMEOUT", DEFAULT_INDEX_SYNC_TIMEOUT)),
    )
    app.config.update(config or {})
    policies = IdentityPolicies.parse(app.config["MAC_POLICY"], app.config["FIRMWARE_POLICY"])
    system_namespaces = frozenset(n.strip() for n in app.config["SYSTEM_NAMESPACES"].split(",") if n.strip())
    lookups = app.config["LOOKUPS"] or ClusterLookups.from_environment()
    metrics = Metrics()
    # the identity index starts with the app, so the worker is ready once it has synced (only collision policies
    # read the identities in use)
    index = lookups.index.start() if isinstance(lookups, ClusterLookups) and policies.needs_cluster_identities \
        else None
    ready_by = time.monotonic() + app.config["INDEX_SYNC_TIMEOUT"]
    if index is None:
        metrics.index_synced()
    else:
        metrics.index_waiting_until(ready_by)
        index.on_synced(metrics.index_synced)

    metrics_port = str(app.config["METRICS_PORT"] or "")
    large_bodies = threading.BoundedSemaphore(1)

    @app.before_request
    def separate_metrics_port() -> Response | None:
        # /metrics may be open to a monitoring namespace, the admission port only to the API server
        if metrics_port and (request.environ.get("SERVER_PORT") == metrics_port) != (request.path == "/metrics"):
            return http_error(NotFound())
        return None

    def reply(outcome: admission.Outcome, started: float) -> Response:
        for lookup in outcome.failed_lookups:
            metrics.lookup_failed(lookup)
        metrics.observe(outcome.kind, outcome.decision, time.perf_counter() - started)
        return Response(json.dumps(outcome.review), status=outcome.http_status, mimetype="application/json")

    @app.post("/mutate")
    def mutate() -> Response:
        started = time.perf_counter()
        deadline = time.monotonic() + admission.LOOKUP_DEADLINE
        # a large body is read only when this worker judges no other: parsed, it takes some twenty times its size
        large = request.content_length is None or request.content_length > LARGE_BODY
        if large and not large_bodies.acquire(timeout=admission.LOOKUP_DEADLINE):
            return reply(admission.invalid("the webhook is busy with other very large objects: retry",
                                           http_status=503), started)
        try:
            return judge(started, deadline)
        finally:
            if large:
                large_bodies.release()

    def judge(started: float, deadline: float) -> Response:
        try:
            body = request.get_data(cache=False)
        except OSError as error:  # the client stopped sending (gunicorn's socket timeout): it gets what it can read
            return reply(admission.invalid(f"the request body did not arrive: {error}"), started)
        if request.content_length is None and len(body) >= app.config["MAX_CONTENT_LENGTH"]:
            # a chunked body is cut at the limit rather than refused: say so, not "malformed JSON"
            return too_large(None)
        return reply(admission.review(body, lookups, policies, system_namespaces=system_namespaces,
                                      deadline=deadline), started)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge | None) -> Response:
        limit = app.config["MAX_CONTENT_LENGTH"]
        _drain(request.environ.get("wsgi.input"), min(request.content_length or 0, DRAIN_LIMIT_FACTOR * limit))
        return reply(admission.invalid(f"the AdmissionReview is larger than {limit} bytes, more than the API server "
                                       "ever sends", http_status=413), time.perf_counter())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:  # wrong path or method: plain JSON, never an HTML page
        body = json.dumps({"code": error.code, "message": f"{error.name}: {error.description}"})
        return Response(body, status=error.code, mimetype="application/json")

    @app.get("/healthz")
    def health() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def ready() -> Response:
        # Lookups fail safe, so the webhook can always answer; only a start without the identities in use waits,
        # and not for ever: past the timeout every VM review says it was not checked against the cluster. A probe
        # reaches one worker of the pod, which answers for all of them: the pod gets traffic once every worker can
        # check, and any of them may get it.
        waiting, serving_unsynced = metrics.unsynced_workers(time.monotonic())
        unchecked = index.unchecked_reason() if index is not None and not index.synced else None
        if not unchecked and (waiting or serving_unsynced):
            count = waiting or serving_unsynced
            unchecked = f"{count} worker{'s' if count > 1 else ''} of this pod " \
                        f"{'have' if count > 1 else 'has'} not synced the identity index yet"
        if waiting:
            return Response(f"waiting: {unchecked}\n", status=503, mimetype="text/plain")
        if unchecked:
            logging.getLogger("kvbackup_webhook").warning("serving although %s", unchecked)
            return Response(f"ok, but {unchecked}: MAC and firmware collisions with running VMs are not caught\n",
                            mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    return app
