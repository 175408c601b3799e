"""The only place that talks to a Kubernetes API server: kubeconfig handling, raw requests, kubectl-style errors.

Requests go through the official client's ``ApiClient`` (its auth, TLS and proxy handling) but with plain JSON
paths, so custom resources of whatever version the cluster serves need no generated models. The client takes a
quarter of a second to import, so it is imported by ``connect`` only: ``--help``, completion and offline commands
never pay for it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import quote, urlencode, urlsplit

from .errors import ApiError, KubeError  # part of this module's interface: callers catch them from here
from .kinds import Kind

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

LIST_PAGE_SIZE = 500  # kubectl's own chunk size
log = logging.getLogger("kubectl_kvbackup.api")
CONNECT_TIMEOUT = 30.0  # as kubectl's dialer: an unreachable server fails even without --request-timeout


@dataclass(frozen=True)
class ConnectionOptions:
    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None
    request_timeout: float | None = None


def _kubeconfig_paths(explicit: str | None) -> str:
    if explicit:
        return explicit
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


_PATH_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def _absolute_paths(entry: dict[str, Any], folder: str) -> dict[str, Any]:
    """Kubeconfig file references are relative to the file that holds them."""
    return {k: (os.path.join(folder, v) if k in _PATH_FIELDS and isinstance(v, str) and not os.path.isabs(v)
                else v) for k, v in entry.items()}


def merge_kubeconfigs(paths: list[str]) -> dict[str, Any]:
    """Merge kubeconfig files as kubectl does: the first file to set a value or a named entry wins."""
    import yaml

    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as error:
            raise KubeError(f"error: invalid kubeconfig {path}: {error}") from None
        if not isinstance(config, dict):
            raise KubeError(f"error: invalid kubeconfig {path}: not a mapping")
        folder = os.path.dirname(os.path.abspath(path))
        merged.setdefault("current-context", config.get("current-context"))
        for section, body in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            names = {e.get("name") for e in merged[section]}
            for entry in config.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") not in names:
                    merged[section].append({**entry, body: _absolute_paths(entry.get(body) or {}, folder)})
    return merged


def _select_context(config: dict[str, Any], options: ConnectionOptions) -> tuple[str, dict[str, Any]]:
    name = options.context or config.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    if not name:
        raise KubeError("error: no context is set: pass --context or set current-context in your kubeconfig")
    if name not in contexts:
        raise KubeError(f'error: context "{name}" does not exist in your kubeconfig')
    return name, dict(contexts[name])


@dataclass
class Connection:
    """An API client with the namespace kubectl would default to, and a count of requests made."""

    api: ApiClient
    namespace: str
    request_timeout: float | None
    context: str = ""  # the kubeconfig context used; empty in-cluster
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def server(self) -> str:
        return self.api.configuration.host

    def request(self, method: str, path: str, query: list[tuple[str, Any]] | None = None,
                body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """One HTTP call; returns the decoded JSON body or raises ApiError/KubeError.

        The call goes out through the client's connection pool (its TLS, client certificates and proxy) with the
        client's authentication headers, but not through its generated request code, whose signatures change
        between client releases (param_serialize exists from 37 only)."""
        import urllib3

        headers = {**self.api.default_headers, "Accept": "application/json", **self._auth_headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            # JSON is YAML too, so apply patches (application/apply-patch+yaml) are sent as JSON like the rest
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        with self._lock:
            self.requests += 1
        started = time.monotonic()
        try:
            response = self.api.rest_client.pool_manager.request(
                method, url, body=data, headers=headers, retries=False, preload_content=True,
                timeout=urllib3.Timeout(connect=self.request_timeout or CONNECT_TIMEOUT, read=self.request_timeout))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            cause = connection_failure(error, self.server, self.request_timeout)
            log.debug("%s %s failed in %.0f ms: %s", method, url, (time.monotonic() - started) * 1000, cause)
            raise KubeError(f"error: Unable to connect to the server {self.server}: {cause}") from None
        log.debug("%s %s %s in %.0f ms", method, url, response.status, (time.monotonic() - started) * 1000)
        text = response.data.decode("utf-8", "replace") if response.data else ""
        try:
            decoded = json.loads(text) if text else {}
        except ValueError:
            decoded = {"message": text.strip()[:300]}
        if response.status >= 400:
            raise ApiError(response.status, decoded.get("reason") or _reason_for(response.status),
                           decoded.get("message") or f"the server responded with status {response.status}", decoded)
        return decoded

    def _auth_headers(self) -> dict[str, str]:
        """The bearer token (refreshed by an exec credential plugin when it expires), as the client would send it."""
        settings = self.api.configuration.auth_settings()
        return {entry["key"]: entry["value"] for entry in settings.values()
                if entry.get("in") == "header" and entry.get("value")}

    def list_pages(self, path: str, label_selector: str = "") -> Iterator[dict[str, Any]]:
        """Every item of a LIST, fetched in pages of LIST_PAGE_SIZE as kubectl does.

        A list that outlives its continue token (etcd compacts every 5 minutes) is answered 410 Expired with a
        token that continues after the last item at the latest state (apiserver's etcd3 store,
        handleCompactedErrorForPaging): the list goes on from it, so no item is fetched twice; objects changed in
        between may show in their newer state, as with any list that is not one snapshot."""
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", LIST_PAGE_SIZE)]
            if token:
                query.append(("continue", token))
            if label_selector:
                query.append(("labelSelector", label_selector))
            try:
                page = self.request("GET", path, query)
            except ApiError as error:
                token = _fresh_continue(error, token)
                continue
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def watch(self, path: str, query: list[tuple[str, Any]], read_timeout: float) -> Iterator[dict[str, Any]]:
        """The events of a WATCH (``watch=1`` is added), one JSON line each, as they arrive. Raises ApiError for an
        HTTP error, KubeError when the connection fails or stays silent for ``read_timeout`` seconds. The stream is
        closed when the caller stops iterating."""
        import urllib3

        headers = {**self.api.default_headers, "Accept": "application/json", **self._auth_headers()}
        url = self.server + path + "?" + urlencode([("watch", "1"), *query])
        with self._lock:
            self.requests += 1
        try:
            raw = self.api.rest_client.pool_manager.request(
                "GET", url, headers=headers, retries=False, preload_content=False,
                timeout=urllib3.Timeout(connect=self.request_timeout or CONNECT_TIMEOUT, read=read_timeout))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            cause = connection_failure(error, self.server, read_timeout)
            raise KubeError(f"error: Unable to connect to the server {self.server}: {cause}") from None
        try:
            if raw.status >= 400:
                body = json.loads(raw.read() or b"{}")
                raise ApiError(raw.status, body.get("reason") or _reason_for(raw.status),
                               body.get("message") or f"the server responded with status {raw.status}", body)
            pending = b""
            for chunk in raw.stream(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(f"the watch of {path} broke: {connection_failure(error, self.server, read_timeout)}"
                            ) from None
        except ValueError as error:
            raise KubeError(f"the watch of {path} sent something that is not JSON: {error}") from None
        finally:
            raw.close()  # an unfinished stream cannot be reused: the pool opens a new connection next time
            raw.release_conn()


def _fresh_continue(error: ApiError, token: str) -> str:
    """The token a 410 Expired for a continued list offers; any other error, or none offered, is raised."""
    fresh = (error.body.get("metadata") or {}).get("continue") if error.status == 410 and token else None
    if not fresh or fresh == token:
        raise error
    log.debug("continue token expired; continuing from the token the server offered")
    return fresh


def _reason_for(status: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(status, "")


def _causes(error: BaseException) -> list[BaseException]:
    """urllib3's wrappers down to the OS or TLS error (MaxRetryError -> NewConnectionError -> ConnectionRefusedError)."""
    chain = [error]
    while len(chain) < 10:
        inner = getattr(chain[-1], "reason", None)
        if not isinstance(inner, BaseException):
            inner = chain[-1].__cause__ or chain[-1].__context__
        if not isinstance(inner, BaseException) or inner in chain:
            break
        chain.append(inner)
    return chain


def connection_failure(error: BaseException, server: str, request_timeout: float | None) -> str:
    """Why a request never got an answer, in the words kubectl (Go's net/http) uses, without Python class names."""
    import socket
    import ssl

    parts = urlsplit(server)
    address = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    chain = _causes(error)
    cause, text = chain[-1], str(chain[-1])
    connecting = any(type(e).__name__ in ("ConnectTimeoutError", "NewConnectionError") for e in chain)
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in text:
        return f"dial tcp {address}: connect: connection refused"
    if isinstance(cause, socket.gaierror) or "Name or service not known" in text or "nodename nor servname" in text:
        return f"dial tcp: lookup {parts.hostname}: no such host"
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = getattr(cause, "verify_message", "") or "certificate signed by unknown authority"
        return f"tls: failed to verify certificate: x509: {detail}"
    if isinstance(cause, (TimeoutError, socket.timeout)) or "timed out" in text.lower():
        if connecting:
            return f"dial tcp {address}: i/o timeout"
        limit = f" after --request-timeout {request_timeout:g}s" if request_timeout else ""
        return f"net/http: request canceled (Client.Timeout exceeded while awaiting headers): timed out{limit}"
    if isinstance(cause, ConnectionResetError) or "reset by peer" in text:
        return f"read tcp {address}: connection reset by peer"
    if "RemoteDisconnected" in repr(cause) or "without response" in text:
        return "EOF: the server closed the connection without answering"
    return re.sub(r"^\[Errno -?\d+\] ", "", text.split(">: ", 1)[-1])


def configure_logging(verbosity: int) -> None:
    """-v=6 logs each API request once, as kubectl does: our own line only, not urllib3's or the client's."""
    log.handlers = [_StderrHandler()] if verbosity >= 6 else []
    log.setLevel(logging.DEBUG if verbosity >= 6 else logging.WARNING)
    log.propagate = False


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (a command may run several times in one process)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def connect(options: ConnectionOptions) -> Connection:
    """A Connection as kubectl would make it: --kubeconfig, else KUBECONFIG, else ~/.kube/config, else in-cluster."""
    import urllib3
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s_client.Configuration()
    configuration.retries = False  # one attempt, so --request-timeout bounds the wait
    existing = _existing_kubeconfigs(options)
    try:
        if not existing and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
            namespace, context_name = options.namespace or _in_cluster_namespace(), ""
        elif not existing:
            raise KubeError("error: no kubeconfig found (looked at --kubeconfig, KUBECONFIG and ~/.kube/config) "
                            "and not running in a cluster: pass --kubeconfig, or use -f to read manifests offline")
        else:
            merged = merge_kubeconfigs([os.path.expanduser(p) for p in existing])
            context_name, context = _select_context(merged, options)
            if options.cluster:
                context["cluster"] = options.cluster
            if options.user:
                context["user"] = options.user
            merged = {**merged, "contexts": [{"name": context_name, "context": context}]}
            k8s_config.load_kube_config_from_dict(merged, context=context_name, client_configuration=configuration,
                                                  persist_config=False)
            namespace = options.namespace or context.get("namespace") or "default"
    except (ConfigException, ValueError, OSError) as error:
        raise KubeError(f"error: invalid kubeconfig: {error}") from None
    if not configuration.verify_ssl:
        # insecure-skip-tls-verify is the user's explicit choice: kubectl says nothing about it, neither do we
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return Connection(k8s_client.ApiClient(configuration), namespace, options.request_timeout, context_name)


def _existing_kubeconfigs(options: ConnectionOptions) -> list[str]:
    paths = _kubeconfig_paths(options.kubeconfig)
    existing = [p for p in paths.split(os.pathsep) if p and os.path.exists(os.path.expanduser(p))]
    if options.kubeconfig and not existing:
        raise KubeError(f"error: stat {options.kubeconfig}: no such file or directory")
    return existing


def read_kubeconfig(options: ConnectionOptions) -> dict[str, Any]:
    """The merged kubeconfig kubectl would read (no sections when there is none)."""
    return merge_kubeconfigs([os.path.expanduser(p) for p in _existing_kubeconfigs(options)])


def default_namespace(options: ConnectionOptions) -> str:
    """The namespace kubectl would use, read from the kubeconfig alone (no client, no server): -n, else the
    context's namespace, else the service account's in a pod, else ``default``."""
    if options.namespace:
        return options.namespace
    if not _existing_kubeconfigs(options):
        return _in_cluster_namespace() if os.environ.get("KUBERNETES_SERVICE_HOST") else "default"
    merged = read_kubeconfig(options)
    if not options.context and not merged.get("current-context"):
        return "default"
    return _select_context(merged, options)[1].get("namespace") or "default"


def _in_cluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def collection_path(kind: Kind, version: str, namespace: str | None) -> str:
    """The REST path of a collection; ``namespace=None`` for all namespaces (or a cluster-scoped kind)."""
    base = f"/apis/{kind.group}/{version}" if kind.group else f"/api/{version}"
    if kind.namespaced and namespace:
        return f"{base}/namespaces/{quote(namespace, safe='')}/{kind.plural}"
    return f"{base}/{kind.plural}"


def object_path(kind: Kind, version: str, namespace: str, name: str) -> str:
    return f"{collection_path(kind, version, namespace)}/{quote(name, safe='')}"
