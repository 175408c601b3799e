"""The object-metadata validation every kube-apiserver type makes, all causes at once as kube-apiserver lists them.

Sources: staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go (ValidateObjectMeta,
ValidateOwnerReferences, ValidateObjectMetaUpdate) and generic.go (name validators per type).
"""

from __future__ import annotations

import re
from typing import Any

from kubectl_kvbackup.selectors import label_key_problem, label_value_problem

from .status import FieldError, invalid
from .types import ResourceType

Obj = dict[str, Any]

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN_PROBLEM = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                      "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                      f"for validation is '{_SUBDOMAIN.pattern}')")
_LABEL_PROBLEM = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                  "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                  f"validation is '{_LABEL.pattern}')")
#: kinds that may never own anything (objectmeta.go BannedOwners)
_BANNED_OWNERS = {("v1", "Event"), ("events.k8s.io/v1", "Event")}


def _name_problem(rt: ResourceType, name: str) -> str | None:
    if rt.group == "rbac.authorization.k8s.io":  # path segment names
        return None if name not in (".", "..") and not set("/%") & set(name) else \
            "may not contain '/' or '%' and may not be '.' or '..'"
    if rt.kind in ("Namespace", "Service"):
        return None if len(name) <= 63 and _LABEL.fullmatch(name) else _LABEL_PROBLEM
    return None if len(name) <= 253 and _SUBDOMAIN.fullmatch(name) else _SUBDOMAIN_PROBLEM


def _owner_reference_errors(references: Any) -> list[FieldError]:
    # the path has no index: validateOwnerReference is given fldPath "metadata.ownerReferences" for every entry
    path = "metadata.ownerReferences"
    if not isinstance(references, list):
        return [FieldError(path, "FieldValueInvalid", "must be a list", references)]
    errors, controller = [], ""
    for ref in references:
        ref = ref if isinstance(ref, dict) else {}
        api_version, kind = str(ref.get("apiVersion") or ""), str(ref.get("kind") or "")
        version = api_version.rpartition("/")[2]
        if not version:
            errors.append(FieldError(f"{path}.apiVersion", "FieldValueInvalid", "version must not be empty",
                                     api_version))
        if not kind:
            errors.append(FieldError(f"{path}.kind", "FieldValueInvalid", "kind must not be empty", kind))
        if not ref.get("name"):
            errors.append(FieldError(f"{path}.name", "FieldValueInvalid", "name must not be empty",
                                     str(ref.get("name") or "")))
        if not ref.get("uid"):
            errors.append(FieldError(f"{path}.uid", "FieldValueInvalid", "uid must not be empty",
                                     str(ref.get("uid") or "")))
        if (api_version, kind) in _BANNED_OWNERS:
            errors.append(FieldError(path, "FieldValueInvalid", f"{api_version}, Kind={kind} is disallowed from "
                                     "being an owner", ref))
        if ref.get("controller") is True:
            this = f"{kind}/{ref.get('name', '')}"
            if controller:
                errors.append(FieldError(path, "FieldValueInvalid", "Only one reference can have Controller set to "
                                         f'true. Found "true" in references for {controller} and {this}', references))
            else:
                controller = this
    return errors


def metadata_errors(rt: ResourceType, obj: Obj) -> list[FieldError]:
    meta = obj["metadata"]
    name = meta.get("name", "")
    errors = []
    problem = _name_problem(rt, name)
    if problem:
        errors.append(FieldError("metadata.name", "FieldValueInvalid", problem, name))
    for key, value in (meta.get("labels") or {}).items():
        problem = label_key_problem(key)
        if problem:
            errors.append(FieldError("metadata.labels", "FieldValueInvalid", problem, key))
        problem = label_value_problem(str(value))
        if problem or not isinstance(value, str):
            errors.append(FieldError("metadata.labels", "FieldValueInvalid",
                                     f"a valid label {problem or 'must be a string'}", value))
    if "ownerReferences" in meta:
        errors += _owner_reference_errors(meta["ownerReferences"])
    return errors


def validate(rt: ResourceType, obj: Obj, old: Obj | None = None) -> None:
    """Raise 422 with every cause, as kube-apiserver's validation does, or return."""
    errors = metadata_errors(rt, obj)
    if old is not None and old["metadata"].get("deletionTimestamp"):
        added = set(obj["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
        if added:  # ValidateObjectMetaUpdate
            errors.append(FieldError("metadata.finalizers", "FieldValueForbidden",
                                     "no new finalizers can be added if the object is being deleted"))
    if errors:
        raise invalid(rt, obj["metadata"].get("name", ""), errors)
