"""The only place that talks to a Kubernetes API server: kubeconfig handling, raw requests, kubectl-style errors.

Requests go through the official client's ``ApiClient`` (its auth, TLS and proxy handling) but with plain JSON
paths, so custom resources of whatever version the cluster serves need no generated models.
"""

from __future__ import annotations

import json
import logging
import os
import time
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException
import yaml

from .kinds import Kind

LIST_PAGE_SIZE = 500  # kubectl's own chunk size
log = logging.getLogger("kubectl_kvbackup.api")
CONNECT_TIMEOUT = 30.0  # as kubectl's dialer: an unreachable server fails even without --request-timeout


class KubeError(Exception):
    """An error to show the user as is: one line, kubectl's wording where kubectl has one."""

    exit_code = 1


class ApiError(KubeError):
    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None):
        self.status, self.reason, self.body = status, reason, body or {}
        super().__init__(f"Error from server ({reason}): {message}" if reason else f"Error from server: {message}")


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
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
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

    api: k8s_client.ApiClient
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
        """One HTTP call; returns the decoded JSON body or raises ApiError/KubeError."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        with self._lock:
            self.requests += 1
        method_, url, headers, _, _ = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, auth_settings=["BearerToken"])
        started = time.monotonic()
        try:
            response = self.api.call_api(method_, url, header_params=headers, body=body,
                                         _request_timeout=(self.request_timeout or CONNECT_TIMEOUT,
                                                           self.request_timeout))
            response.read()
            log.debug("%s %s %s in %.0f ms", method, url, response.status, (time.monotonic() - started) * 1000)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(f"Unable to connect to the server {self.server}: {_root_cause(error)}") from None
        except k8s_client.ApiException as error:
            raise KubeError(f"Unable to connect to the server {self.server}: {error.reason}") from None
        text = response.data.decode("utf-8", "replace") if response.data else ""
        try:
            decoded = json.loads(text) if text else {}
        except ValueError:
            decoded = {"message": text.strip()[:300]}
        if response.status >= 400:
            raise ApiError(response.status, decoded.get("reason") or _reason_for(response.status),
                           decoded.get("message") or f"the server responded with status {response.status}", decoded)
        return decoded

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
        with self._lock:
            self.requests += 1
        method, url, headers, _, _ = self.api.param_serialize(
            "GET", path, query_params=[("watch", "1"), *query], header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(method, url, header_params=headers,
                                         _request_timeout=(self.request_timeout or CONNECT_TIMEOUT, read_timeout))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(f"Unable to connect to the server {self.server}: {_root_cause(error)}") from None
        except k8s_client.ApiException as error:
            raise KubeError(f"Unable to connect to the server {self.server}: {error.reason}") from None
        raw = response.response
        try:
            if response.status >= 400:
                body = json.loads(raw.read() or b"{}")
                raise ApiError(response.status, body.get("reason") or _reason_for(response.status),
                               body.get("message") or f"the server responded with status {response.status}", body)
            pending = b""
            for chunk in raw.stream(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(f"the watch of {path} broke: {_root_cause(error)}") from None
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


def _root_cause(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    while isinstance(reason, BaseException) and getattr(reason, "reason", None) is not None:
        reason = reason.reason
    text = str(reason or error)
    return text.split(">: ", 1)[-1] if ">: " in text else text


def connect(options: ConnectionOptions) -> Connection:
    """A Connection as kubectl would make it: --kubeconfig, else KUBECONFIG, else ~/.kube/config, else in-cluster."""
    paths = _kubeconfig_paths(options.kubeconfig)
    configuration = k8s_client.Configuration()
    configuration.retries = False  # one attempt, so --request-timeout bounds the wait
    existing = [p for p in paths.split(os.pathsep) if p and os.path.exists(os.path.expanduser(p))]
    if options.kubeconfig and not existing:
        raise KubeError(f"error: stat {options.kubeconfig}: no such file or directory")
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
    except (ConfigException, ValueError, OSError, yaml.YAMLError) as error:
        raise KubeError(f"error: invalid kubeconfig: {error}") from None
    return Connection(k8s_client.ApiClient(configuration), namespace, options.request_timeout, context_name)


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
