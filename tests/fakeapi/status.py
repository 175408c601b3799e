"""Errors as kube-apiserver answers them: ``Status`` bodies with its exact reasons and message formats."""

from __future__ import annotations

from typing import Any

from .types import ResourceType

Obj = dict[str, Any]

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


class ApiStatus(Exception):
    """An error answered as a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> Obj:
        status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
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


def invalid(rt: ResourceType, name: str, field: str, value: Any, problem: str) -> ApiStatus:
    """422 Invalid; unlike the others, details.kind is the Kind here, as kube-apiserver sets it."""
    message = f'Invalid value: "{value}": {problem}' if value is not None else problem
    return ApiStatus(422, "Invalid", f'{rt.kind} "{name}" is invalid: {field}: {message}',
                     {"name": name, "group": rt.group, "kind": rt.kind,
                      "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})


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


def unknown_path(path: str) -> ApiStatus:
    return ApiStatus(404, "NotFound", "the server could not find the requested resource",
                     {"causes": [{"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}]})
