"""Errors as kube-apiserver answers them: ``Status`` bodies with its exact reasons and message formats."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .types import ResourceType

Obj = dict[str, Any]

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


class ApiStatus(Exception):
    """An error answered as a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None,
                 metadata: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details
        self.metadata = metadata or {}

    def body(self) -> Obj:
        status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": dict(self.metadata), "status": "Failure",
                       "message": self.message, "code": self.code}
        if self.reason:  # kube omits an empty reason (a webhook's denial may carry none)
            status["reason"] = self.reason
        if self.details:
            status["details"] = self.details
        return status


def _details(rt: ResourceType, name: str) -> Obj:
    # NotFound, AlreadyExists, Conflict and Forbidden name the resource (plural) in details.kind
    return {"name": name, "group": rt.group, "kind": rt.plural}


def not_found(rt: ResourceType, name: str) -> ApiStatus:
    return ApiStatus(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiStatus:
    return ApiStatus(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiStatus:
    return ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
                     _details(rt, name))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def forbidden(user: str, verb: str, rt: ResourceType, resource: str, namespace: str | None,
              name: str | None) -> ApiStatus:
    what = f'{rt.qualified} "{name}"' if name else rt.qualified
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return ApiStatus(403, "Forbidden", f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in '
                                       f'API group "{rt.group}"{where}', _details(rt, name or ""))


@dataclass(frozen=True)
class FieldError:
    """One cause of a 422, as apimachinery's ``field.Error``: its type decides the wording of its message."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueForbidden
    detail: str
    value: Any = None
    #: the value as Go's ``%#v`` prints it, where it is not a string, a number or a bool
    value_text: str | None = None

    @property
    def body(self) -> str:
        """``field.Error.ErrorBody``: staging/src/k8s.io/apimachinery/pkg/util/validation/field/errors.go"""
        if self.reason in ("FieldValueRequired", "FieldValueForbidden"):
            head = {"FieldValueRequired": "Required value", "FieldValueForbidden": "Forbidden"}[self.reason]
            return f"{head}: {self.detail}" if self.detail else head
        head = {"FieldValueInvalid": "Invalid value", "FieldValueNotSupported": "Unsupported value"}[self.reason]
        return f"{head}: {self.value_text or go_value(self.value)}: {self.detail}"


def go_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def invalid_all(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiStatus:
    """422 Invalid listing every cause, as apierrors.NewInvalid does (one error plain, several in brackets);
    details.kind is the Kind here, not the resource."""
    texts = [f"{e.field}: {e.body}" for e in errors]
    listed = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
    qualified = f"{kind}.{group}" if group else kind
    return ApiStatus(422, "Invalid", f'{qualified} "{name}" is invalid: {listed}',
                     {"name": name, "group": group, "kind": kind,
                      "causes": [{"reason": e.reason, "message": e.body, "field": e.field} for e in errors]})


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiStatus:
    return invalid_all(rt.kind, rt.group, name, errors)


def bad_request(message: str) -> ApiStatus:
    return ApiStatus(400, "BadRequest", message)


def internal_error(message: str) -> ApiStatus:
    return ApiStatus(500, "InternalError", f"Internal error occurred: {message}",
                     {"causes": [{"message": message}]})


def method_not_allowed() -> ApiStatus:
    return ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def unsupported_media_type(rt: ResourceType) -> ApiStatus:
    accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    if rt.builtin:
        accepted += ", application/strategic-merge-patch+json"
    return ApiStatus(415, "UnsupportedMediaType",
                     f"the body of the request was in an unknown format - accepted media types include: {accepted}")


def forbidden_because(rt: ResourceType, name: str, why: str, causes: list[Obj] | None = None) -> ApiStatus:
    """apierrors.NewForbidden for a reason other than RBAC (admission plugins)."""
    what = f'{rt.qualified} "{name}"' if name else rt.qualified
    details = {**_details(rt, name), **({"causes": causes} if causes else {})}
    return ApiStatus(403, "Forbidden", f"{what} is forbidden: {why}", details)


def expired(message: str, continue_token: str | None = None) -> ApiStatus:
    """410 Expired (apierrors.NewResourceExpired); a list's carries a fresh continue token in its metadata."""
    return ApiStatus(410, "Expired", message, metadata={"continue": continue_token} if continue_token else None)


def unknown_path(path: str) -> ApiStatus:
    return ApiStatus(404, "NotFound", "the server could not find the requested resource",
                     {"causes": [{"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}]})
