"""A fake Kubernetes API server over real HTTP on loopback, faithful where kvbackup depends on it.

Tests drive it through the real ``kubernetes`` client and a kubeconfig it writes; they seed and inspect its
objects directly, read its request log to count API calls, and program denials, faults, guest freeze outcomes and
admission webhooks; ``settle`` runs the namespace controller and garbage collector, ``compact`` etcd's compaction.
docs/testing.md lists what it implements, the kube-apiserver release it claims and what it leaves out.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import ssl
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

import yaml

from . import apply, lifecycle, watch
from .admission import Admission, Call, UserInfo
from .authz import Authorizer, Rule
from .discovery import VMI_SUBRESOURCE_TYPE, PageNotFound, Route, route
from .kubevirt import FreezeCall, Freezer
from .status import REASONS, ApiStatus, FieldError, invalid_all, method_not_allowed
from .storage import Store, parse_json
from .types import DEFAULT_TYPES, GO_TRUE, Registry, ResourceType

Obj = dict[str, Any]
ADMIN = "admin"
#: set to 1 to print one line per request on stderr
LOG_ENV = "KVBACKUP_FAKEAPI_LOG"
#: the options kind each verb's dryRun is validated as (meta/v1 validation ValidateDryRun)
_OPTIONS_KIND = {"create": "CreateOptions", "update": "UpdateOptions", "patch": "PatchOptions",
                 "delete": "DeleteOptions"}
_APPLY = "application/apply-patch+yaml"
_VERBS = {("GET", False): "list", ("GET", True): "get", ("POST", False): "create", ("PUT", True): "update",
          ("PATCH", True): "patch", ("DELETE", True): "delete"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    user: str  # "" when the token was missing or unknown


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int | None
    delay: float
    times: int | None
    message: str | None
    unserved: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a pooled connection closed between two commands run in the test's own process) is
        # no error of the server's, and kube-apiserver logs nothing for it; socketserver would print a traceback to
        # the stderr that tests read.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):  # a client that refused our certificate
            return
        super().handle_error(request, client_address)


class FakeKubeAPI:
    """``with FakeKubeAPI() as api:`` (or ``start()``/``stop()``); seed with ``add``; connect with a kubeconfig
    from ``write_kubeconfig``. Every public method is safe to call while requests are being served."""

    def __init__(self, types: Iterable[ResourceType] = DEFAULT_TYPES, tls: bool = False):
        """``tls``: serve HTTPS with a certificate for 127.0.0.1 from a CA of its own, which ``write_kubeconfig``
        trusts — as every real API server does; kubectl sends no bearer token over plain HTTP."""
        self._registry = Registry(types)
        self._store = Store(self._registry)
        self._authz = Authorizer()
        self._freezer = Freezer(self._store)
        self._admission = Admission(self._store)
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self._user_uids: dict[str, str] = {}
        self._stopping = threading.Event()
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ca_pem: bytes | None = None
        self._tls_context = self._serving_context() if tls else None

    # --- lifecycle and connection --------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        api = self
        self._stopping.clear()

        class Handler(_Handler):
            fake = api

        self._server = _Server(("127.0.0.1", 0), Handler)
        if self._tls_context is not None:
            # the handshake happens in the connection's own thread, so a silent client holds up no other
            self._server.socket = self._tls_context.wrap_socket(self._server.socket, server_side=True,
                                                                do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube-api",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # open watches end
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake API server is not started"
        scheme = "https" if self._tls_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def _serving_context(self) -> ssl.SSLContext:
        from kubectl_kvbackup import certs

        material = certs.issue(["localhost"], ip_addresses=("127.0.0.1",))
        self._ca_pem = material.ca_pem
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain reads files only; the key lives there for the blink it takes
        with tempfile.TemporaryDirectory() as folder:
            chain, key = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
            with open(chain, "wb") as f:
                f.write(material.cert_pem + material.ca_pem)
            with open(key, "wb") as f:
                f.write(material.key_pem)
            context.load_cert_chain(chain, key)
        return context

    def token_for(self, user: str) -> str:
        """The bearer token that authenticates as ``user`` (one per user, created on first use)."""
        with self._lock:
            for token, owner in self._tokens.items():
                if owner == user:
                    return token
            token = secrets.token_hex(16)
            self._tokens[token] = user
            return token

    def write_kubeconfig(self, path: str, namespace: str = "default", user: str = ADMIN) -> str:
        """Write a kubeconfig with one context, ``user`` by bearer token in ``namespace``; return ``path``."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url, **self._trust()}}],
            "users": [{"name": user, "user": {"token": self.token_for(user)}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": user, "namespace": namespace}}],
        }
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        return path

    def _trust(self) -> dict[str, str]:
        if self._ca_pem is None:
            return {}
        return {"certificate-authority-data": base64.b64encode(self._ca_pem).decode()}

    # --- types ---------------------------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        """Serve another type (or serve a removed group again)."""
        self._registry.register(rt)

    def remove_group(self, group: str) -> None:
        """Stop serving an API group, as a cluster without that operator (CDI, say) would."""
        self._registry.remove_group(group)

    # --- seeding and inspection ----------------------------------------------------------------------------

    def add(self, obj: Obj) -> Obj:
        """Store ``obj`` as if created earlier (no admission, no validation); server fields only where absent."""
        return self._store.add(obj)

    def add_all(self, objs: Iterable[Obj]) -> None:
        for obj in objs:
            self._store.add(obj)

    def _type(self, group: str, kind_or_plural: str) -> ResourceType:
        rt = self._registry.named(group, kind_or_plural)
        if rt is None:
            raise ValueError(f"the fake API server has no type {kind_or_plural!r} in group {group!r}")
        return rt

    def get_object(self, group: str, kind_or_plural: str, namespace: str | None, name: str) -> Obj | None:
        """A copy of the stored object, or None; ``namespace`` is ignored for cluster-scoped types."""
        rt = self._type(group, kind_or_plural)
        found = self._store.stored(rt, namespace if rt.namespaced else "", name)
        return copy.deepcopy(found) if found is not None else None

    def objects(self, group: str, kind_or_plural: str, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects of a type, ordered by namespace and name; ``namespace=None``: all."""
        return self._store.objects(self._type(group, kind_or_plural), namespace)

    def settle(self) -> None:
        """Run what kube-controller-manager does after deletions until nothing is left to do: the namespace
        controller empties and removes terminating namespaces, the garbage collector honours ``orphan`` and
        ``foregroundDeletion`` and deletes objects whose owners are all gone (see ``lifecycle``)."""
        lifecycle.settle(self._store)

    def compact(self) -> None:
        """Forget the write history, as etcd compaction does: older continue tokens answer 410 Expired and
        watches from an older resourceVersion 410 Gone."""
        self._store.compact()

    @property
    def requests(self) -> list[Request]:
        """Every HTTP request so far (a snapshot), in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- authorization and faults --------------------------------------------------------------------------

    def deny(self, user: str, verb: str, group: str, resource: str, namespace: str | None = None) -> None:
        """Forbid ``verb`` on ``resource`` (plural, or ``plural/sub``; ``*`` wildcards) of ``group`` for ``user``.

        ``namespace=None`` denies it in every namespace and at the cluster scope."""
        self._authz.deny(user, verb, group, resource, namespace)

    def allow_only(self, user: str, rules: Iterable[Rule]) -> None:
        """Allow ``user`` only what RBAC-style rules grant: ``{"verbs", "apiGroups", "resources"}`` and
        optionally ``"namespaces"`` (absent: everywhere)."""
        self._authz.allow_only(user, rules)

    def inject(self, method: str, path_regex: str, status: int | None = None, delay: float = 0.0,
               times: int | None = None, message: str | None = None, unserved: bool = False) -> None:
        """Delay and/or fail requests whose method (``*``: any) and path match, ``times`` times (None: always).
        ``unserved``: answer as for a path no handler serves (Go's text/plain ``404 page not found``), as an
        aggregated API that is not installed does."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, delay, times, message,
                                       unserved))

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.path.search(path) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # --- KubeVirt and admission records --------------------------------------------------------------------

    def set_freeze_behaviour(self, namespace: str, name: str, outcome: str = "ok", delay: float = 0.0,
                             unfreeze_outcome: str = "ok") -> None:
        """How freeze (and unfreeze) of one VMI answers: ok | not-running (409) | no-agent (500) | error (500),
        after ``delay`` seconds. A VMI whose ``status.phase`` is set and not Running always answers 409."""
        self._freezer.set_behaviour(namespace, name, outcome, delay, unfreeze_outcome)

    @property
    def freeze_calls(self) -> list[FreezeCall]:
        """Every freeze and unfreeze request so far, whatever its outcome."""
        return self._freezer.calls

    def frozen_vmis(self) -> set[tuple[str, str]]:
        """(namespace, name) of the VMIs frozen and not yet thawed."""
        return self._freezer.frozen()

    @property
    def admission_calls(self) -> list[Call]:
        """Every webhook call-out so far, with the AdmissionReview sent and the response or error."""
        return self._admission.calls

    # --- request handling ----------------------------------------------------------------------------------

    def _user_info(self, user: str) -> UserInfo:
        """Who authentication says the token's owner is: a service account's uid is its object's, as in its
        token; the admin is in system:masters, as kubeadm's admin certificate is."""
        groups: tuple[str, ...] = ()
        uid = None
        if user.startswith("system:serviceaccount:"):
            namespace, _, name = user.removeprefix("system:serviceaccount:").partition(":")
            groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
            account = self.get_object("", "ServiceAccount", namespace, name)
            uid = account["metadata"]["uid"] if account else None
        elif user == ADMIN:
            groups = ("system:masters",)
        with self._lock:
            uid = uid or self._user_uids.setdefault(user, str(uuid.uuid4()))
        return UserInfo(user, uid, groups + ("system:authenticated",))

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON body), or (404, None) for a path no handler serves, or
        (200, iterator of watch events)."""
        split = urlsplit(raw_path)
        path, query = split.path.rstrip("/") or "/", dict(parse_qsl(split.query, keep_blank_values=True))
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self._lock:
            user = self._tokens.get(token)
            self._requests.append(Request(method, path, query, user or ""))
        try:
            if user is None:
                raise ApiStatus(401, "Unauthorized", "Unauthorized")
            fault = self._fault_for(method, path)
            if fault is not None:
                time.sleep(fault.delay)
                if fault.unserved:
                    raise PageNotFound()
                if fault.status:
                    raise ApiStatus(fault.status, REASONS.get(fault.status, "InternalError"),
                                    fault.message or f"injected failure for {method} {path}")
            return self._dispatch(method, route(self._registry, path), query, headers, body, user)
        except PageNotFound:
            return 404, None
        except ApiStatus as status:
            return status.code, status.body()
        except Exception as error:  # a bug in the fake: say so loudly, answer as kube-apiserver would
            traceback.print_exc()
            return 500, ApiStatus(500, "InternalError", f"Internal error occurred: {error!r}").body()

    def _dispatch(self, method: str, target: Route, query: dict[str, str], headers: dict[str, str], body: bytes,
                  user: str) -> tuple[int, Any]:
        if target.document is not None:
            if method != "GET":
                raise method_not_allowed()
            return 200, target.document
        rt, namespace, name, sub = target.rt, target.namespace, target.name, target.subresource
        assert rt is not None
        freeze = rt is VMI_SUBRESOURCE_TYPE
        verb = ("update" if method == "PUT" else None) if freeze else _VERBS.get((method, name is not None))
        if verb is None or (verb == "create" and rt.namespaced and namespace is None):
            raise method_not_allowed()
        if verb == "list" and query.get("watch") in GO_TRUE:
            verb = "watch"
        self._authz.check(user, verb, rt, f"{rt.plural}/{sub}" if sub else rt.plural, namespace,
                          name if verb != "create" else None)
        if freeze:
            return 200, self._freezer.handle(namespace or "", name or "", sub or "", body)
        if verb == "watch":
            return 200, watch.stream(self._store, rt, namespace, query, self._stopping.is_set)
        if verb == "list":
            return 200, self._store.list(rt, namespace, query)
        if verb == "get":
            return 200, self._store.get(rt, namespace, name or "")
        options = _write_options(verb, query, body if verb == "delete" else b"")
        dry_run = bool(options.get("dryRun"))
        admit = self._admission.admitter(rt, self._user_info(user), namespace,
                                          {k: v for k, v in options.items() if k in ("dryRun", "fieldManager")})
        if verb == "create":
            return 201, self._store.create(rt, namespace, parse_json(body), admit, dry_run)
        if verb == "update":
            return 200, self._store.update(rt, namespace, name or "", parse_json(body), sub, admit, dry_run)
        if verb == "patch" and headers.get("content-type", "").split(";")[0].strip() == _APPLY:
            created, obj = apply.apply(self._store, rt, namespace, name or "", body, sub, admit, dry_run,
                                       query.get("fieldManager"), query.get("force") in GO_TRUE)
            return (201 if created else 200), obj
        if verb == "patch":
            return 200, self._store.patch(rt, namespace, name or "", headers.get("content-type", ""), body, sub,
                                          admit, dry_run)
        return 200, self._store.delete(rt, namespace, name or "", options, dry_run)


def _write_options(verb: str, query: dict[str, str], body: bytes) -> dict[str, Any]:
    """The request's CreateOptions, UpdateOptions, PatchOptions or DeleteOptions (query, and a DELETE's body)."""
    options: dict[str, Any] = {}
    if body:
        sent = parse_json(body)
        options.update(sent if isinstance(sent, dict) else {})
    if "dryRun" in query:
        options["dryRun"] = [query["dryRun"]]
    for field in ("fieldManager", "propagationPolicy"):
        if field in query:
            options[field] = query[field]
    if options.get("dryRun") is not None and options["dryRun"] != ["All"]:
        kind = _OPTIONS_KIND[verb]
        raise invalid_all(kind, "meta.k8s.io", "", [FieldError(
            "dryRun", "FieldValueNotSupported", 'supported values: "All"',
            value_text="[]string{" + ", ".join(json.dumps(v) for v in options["dryRun"]) + "}")])
    if not options.get("dryRun"):
        options.pop("dryRun", None)
    return options


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeAPI
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # headers and body leave in separate writes: with Nagle's algorithm the body waits for the client's delayed ACK
    # of the headers, 40 ms a response on Linux, which kube-apiserver (Go sets TCP_NODELAY) never adds
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        code, payload = self.fake.handle(self.command, self.path, headers, body)
        if payload is None:  # no handler: Go's http.NotFound, text and all
            self._send(code, b"404 page not found\n", "text/plain; charset=utf-8")
        elif isinstance(payload, dict):
            self._send(code, json.dumps(payload).encode(), "application/json")
        else:
            self._stream(payload)

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        """A watch: chunked JSON lines until the events end or the client goes."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client closed the watch
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get(LOG_ENV):
            sys.stderr.write(f"fake-kube-api: {format % args}\n")
