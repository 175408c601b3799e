"""AdmissionReview in, AdmissionReview out: parsing, validation, and the restore rules turned into an answer.

Pure: everything the answer needs from the cluster comes through ``Lookups``. The rules themselves live in
``kubectl_kvbackup.rules``; this module only decides when they apply and how their result is told to the API server
(a JSONPatch diffed from the rules' output, or a denial naming the object, the rule and what to do).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Protocol

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.kinds import group_of
from kubectl_kvbackup.rules import (DEFAULT_SYSTEM_NAMESPACES, IdentitiesInUse, IdentityPolicies, RestoreContext,
                                    TakenValues)

from . import jsonpatch

Obj = dict[str, Any]
InUse = tuple[AbstractSet[str], AbstractSet[str], AbstractSet[str]]  # MACs, serials, UUIDs (rules.identity_values)
API_VERSION = "admission.k8s.io/v1"
HANDLED_KINDS = {(k.group, k.kind) for k in (kinds.DATA_VOLUME, kinds.PVC, kinds.VMI, kinds.POD, kinds.VM)}
log = logging.getLogger("kvbackup_webhook")


#: seconds from a request's arrival by which every cluster lookup of it has finished or been abandoned: each API call
#: gets the time left as its timeout, so the answer leaves well inside the API server's 5 s timeoutSeconds
LOOKUP_DEADLINE = 3.5
#: JSON objects and arrays in one object, far more than any VM (KubeVirt allows 256 disks, volumes, interfaces)
#: has: the restore rules copy an object several times over, and a 3 MiB body of a million empty entries would
#: take a worker past its memory limit and the API server's timeout (measured in benchmarks/bench_webhook.py)
MAX_NODES = 50_000
#: more owners than any controller writes: past this the annotation is someone's attempt at many lookups
MAX_OWNERS = 16
#: an ownerReference's fields (k8s.io/apimachinery/pkg/apis/meta/v1 OwnerReference)
OWNER_REFERENCE_FIELDS = frozenset({"apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"})
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")


class LookupFailed(Exception):
    """A cluster lookup did not answer (timeout, error, forbidden): the rule that needed it is skipped, never the
    whole request denied. ``forbidden``: the webhook may not read that kind at all."""

    def __init__(self, message: str, forbidden: bool = False):
        super().__init__(message)
        self.forbidden = forbidden


class IdentitiesUnchecked(LookupFailed):
    """The identities in use are known only in part (the identity index has not synced, or is stale): ``partial``
    is what is known, which the rules still use."""

    def __init__(self, message: str, partial: InUse):
        super().__init__(message)
        self.partial = partial


class Lookups(Protocol):
    """Every lookup finishes by ``deadline`` (``time.monotonic()``) or raises LookupFailed."""

    def namespace_labels(self, namespace: str, deadline: float) -> dict[str, str]: ...

    def owner_uid(self, owner: Obj, namespace: str, deadline: float) -> str | None: ...

    def pvc(self, namespace: str, name: str, deadline: float) -> Obj | None: ...

    def identities(self, obj: Obj, request_uid: str, dry_run: bool) -> InUse: ...

    def reserve_identities(self, obj: Obj, request_uid: str, dry_run: bool) -> None: ...


@dataclass(frozen=True)
class Outcome:
    http_status: int
    review: Obj
    kind: str  # the request's kind, for metrics
    decision: str  # allowed | patched | denied | invalid (see metrics.DECISIONS)
    failed_lookups: tuple[str, ...] = ()


class _Invalid(Exception):
    """The request cannot be answered as asked (the message says why)."""


def answer(uid: str, allowed: bool, *, code: int = 200, message: str = "", reason: str = "",
           patch: list[Obj] | None = None, warnings: list[str] | None = None) -> Obj:
    response: Obj = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "reason": reason, "message": message}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def invalid(message: str, *, http_status: int = 400, uid: str = "", kind: str = "other") -> Outcome:
    """A request the webhook cannot judge. A well-formed review with a bad request gets HTTP 200 and a denial the API
    server shows to the user; a body that is no v1 AdmissionReview gets the HTTP error too (with its uid if any)."""
    code = 413 if http_status == 413 else 400
    return Outcome(http_status, answer(uid, False, code=code, reason="RequestEntityTooLarge" if code == 413 else
                                       "BadRequest", message=f"kvbackup webhook: {message}"), kind, "invalid")


def review(body: bytes, lookups: Lookups, policies: IdentityPolicies, *,
           system_namespaces: frozenset[str] = frozenset(DEFAULT_SYSTEM_NAMESPACES),
           deadline: float | None = None) -> Outcome:
    """The answer to one AdmissionReview body. ``deadline`` (``time.monotonic()``): when lookups stop; by default
    LOOKUP_DEADLINE from now."""
    deadline = time.monotonic() + LOOKUP_DEADLINE if deadline is None else deadline
    try:
        document = _parse(body)
    except _Invalid as error:
        return invalid(str(error))
    request = document.get("request")
    uid = request.get("uid") if isinstance(request, dict) and isinstance(request.get("uid"), str) else ""
    try:
        _check_review(document, uid)
    except _Invalid as error:
        return invalid(str(error), uid=uid)
    kind = _kind_name(request)
    try:
        recorder = _Recorder(lookups, deadline, request_uid=uid, dry_run=request.get("dryRun") is True)
        return _judge(request, recorder, policies, system_namespaces)
    except _Invalid as error:
        return invalid(str(error), http_status=200, uid=uid, kind=kind)
    except Exception as error:  # a rule tripped over an object we did not foresee: deny clearly, never a 500
        log.exception("restore rules failed on request %s", uid)
        return invalid(f"could not apply the restore rules to this object ({type(error).__name__}: {error}); "
                       "please report it", http_status=200, uid=uid, kind=kind)


def _parse(body: bytes) -> Obj:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise _Invalid(f"the request body is not JSON: {error}") from None
    except RecursionError:
        raise _Invalid("the request body is JSON nested too deeply for any AdmissionReview") from None
    if not isinstance(document, dict):
        raise _Invalid("the request body is not a JSON object: expected an admission.k8s.io/v1 AdmissionReview")
    return document


def _check_review(document: Obj, uid: str) -> None:
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if (api_version, kind) != (API_VERSION, "AdmissionReview"):
        raise _Invalid(f"expected apiVersion {API_VERSION} kind AdmissionReview, got apiVersion {api_version!r} kind "
                       f"{kind!r}: register the webhook with admissionReviewVersions: [v1]")
    if not isinstance(document.get("request"), dict):
        raise _Invalid("the AdmissionReview has no request")
    if not uid:
        raise _Invalid("the AdmissionReview request has no uid")


def _kind_name(request: Obj) -> str:
    kind = request.get("kind")
    return kind.get("kind", "other") if isinstance(kind, dict) and isinstance(kind.get("kind"), str) else "other"


def _require(request: Obj, name: str, expected: type, what: str) -> Any:
    value = request.get(name)
    if not isinstance(value, expected):
        raise _Invalid(f"request.{name} is {'missing' if value is None else 'malformed'}: expected {what}")
    return value


def _judge(request: Obj, recorder: "_Recorder", policies: IdentityPolicies, system_namespaces: frozenset[str]
           ) -> Outcome:
    uid = request["uid"]
    kind_ref = _require(request, "kind", dict, "a group/version/kind")
    operation = _require(request, "operation", str, "CREATE, UPDATE, DELETE or CONNECT")
    group, kind = kind_ref.get("group", ""), kind_ref.get("kind")
    if not isinstance(kind, str) or not isinstance(group, str):
        raise _Invalid("request.kind is malformed: expected a group/version/kind")
    if operation != "CREATE" or (group, kind) not in HANDLED_KINDS:
        return Outcome(200, answer(uid, True), kind, "allowed")
    user_info = request.get("userInfo") or {}
    username = user_info.get("username", "") if isinstance(user_info, dict) else ""
    if not isinstance(username, str):
        raise _Invalid("request.userInfo.username is malformed: expected a string")
    if rules.is_system_request(username, system_namespaces):
        return Outcome(200, answer(uid, True), kind, "allowed")
    obj = _require(request, "object", dict, f"the {kind} being created")
    namespace = request.get("namespace") or ""
    if not isinstance(namespace, str):
        raise _Invalid("request.namespace is malformed: expected a string")
    work = _working_copy(obj, kind_ref, namespace)
    namespace = work["metadata"].get("namespace") or ""
    failures = recorder.failures
    if not _in_restore_context(work, namespace, recorder):
        return _allowed(uid, kind, [], failures)
    if _node_count_exceeds(work, MAX_NODES):
        raise _Invalid(f"request.object has more than {MAX_NODES} JSON objects and arrays, more than any {kind} "
                       "kvbackup restores; the restore rules were not applied")
    decision = rules.restore_decision(work)
    if not decision.restore:
        name = work["metadata"].get("name") or work["metadata"].get("generateName", "")
        message = (f"kvbackup restore rules: {kind} {namespace}/{name} must not be restored (rule {decision.rule}): "
                   f"{decision.reason}; leave it out of the restore")
        return Outcome(200, answer(uid, False, code=403, reason="Forbidden", message=message), kind, "denied")
    context = _restore_context(work, policies, recorder)
    mutated, changes = rules.restore_object(work, context)
    recorder.reserve_identities(work, mutated, policies)
    return _allowed(uid, kind, jsonpatch.diff(work, mutated), failures, [f"changed {change}" for change in changes])


def _node_count_exceeds(value: Any, limit: int) -> bool:
    pending, seen = [value], 0
    while pending and seen <= limit:
        item = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        nested = [child for child in children if isinstance(child, (dict, list))]
        seen += len(nested)
        pending.extend(nested)
    return seen > limit


def _allowed(uid: str, kind: str, patch: list[Obj], failures: list[tuple[str, str]],
             notes: list[str] | None = None) -> Outcome:
    warnings = [f"kvbackup: {text}" for text in [*(notes or []), *(text for _, text in failures)]]
    return Outcome(200, answer(uid, True, patch=patch, warnings=warnings),
                   kind, "patched" if patch else "allowed", tuple(lookup for lookup, _ in failures))


def _working_copy(obj: Obj, kind_ref: Obj, namespace: str) -> Obj:
    """The object as the rules expect it. What the API server fills in later (namespace) or omits in the review
    (apiVersion/kind) is taken from the request, so the diff never touches it. Completed in place, not copied: the
    request is parsed for this answer alone, and the rules return changed copies (a 3 MiB object is copied enough)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise _Invalid("request.object.metadata is missing or malformed")
    for name, expected in (("labels", dict), ("annotations", dict), ("ownerReferences", list)):
        if meta.get(name) is not None and not isinstance(meta[name], expected):
            raise _Invalid(f"request.object.metadata.{name} is malformed: expected a {expected.__name__}")
    _check_owners(meta)
    work = obj
    group, version = kind_ref.get("group", ""), kind_ref.get("version", "")
    work.setdefault("apiVersion", f"{group}/{version}" if group else version)
    work.setdefault("kind", kind_ref["kind"])
    if group_of(work["apiVersion"]) != group or work["kind"] != kind_ref["kind"]:
        raise _Invalid(f"request.object is a {work['apiVersion']} {work['kind']} but request.kind says "
                       f"{group}/{version} {kind_ref['kind']}")
    if namespace:
        work["metadata"].setdefault("namespace", namespace)
    return work


def owner_problem(owner: Any) -> str | None:
    """What makes an owner entry unfit to look up, or None. Entries come from the object, and the set-aside
    annotation from whoever created it: each part must be what the API server accepts in an ownerReference, so no
    entry can turn into a request for another path."""
    if not isinstance(owner, dict):
        return "expected an object"
    unknown = sorted(set(owner) - OWNER_REFERENCE_FIELDS)
    if unknown:
        return f"unknown field {unknown[0]!r}"
    for key in ("apiVersion", "kind", "name", "uid"):
        if not isinstance(owner.get(key, ""), str):
            return f"{key} is not a string"
    for key in ("controller", "blockOwnerDeletion"):
        if not isinstance(owner.get(key, False), bool):
            return f"{key} is not true or false"
    group, slash, version = owner.get("apiVersion", "").rpartition("/")
    if not _DNS_LABEL.fullmatch(version) or (slash and not _DNS_SUBDOMAIN.fullmatch(group)) or len(group) > 253:
        return f"apiVersion {owner.get('apiVersion')!r} is not GROUP/VERSION"
    if not _KIND.fullmatch(owner.get("kind", "")):
        return f"kind {owner.get('kind')!r} is not a Kind"
    name = owner.get("name", "")
    if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        return f"name {name!r} is not a DNS-1123 subdomain"
    return None


def _check_owners(meta: Obj) -> None:
    live = meta.get("ownerReferences") or []  # a list: checked by _working_copy
    stashed = (meta.get("annotations") or {}).get(rules.OWNER_REFERENCES_ANNOTATION)
    set_aside: Any = []
    if stashed not in (None, ""):
        try:
            set_aside = json.loads(stashed) if isinstance(stashed, str) else None
        except (ValueError, RecursionError):
            set_aside = None
    where = f"annotation {rules.OWNER_REFERENCES_ANNOTATION}"
    if not isinstance(set_aside, list):
        raise _Invalid(f"request.object.metadata {where} is malformed: expected a JSON list of ownerReferences")
    for what, owners in (("ownerReferences", live), (where, set_aside)):
        if len(owners) > MAX_OWNERS:
            raise _Invalid(f"request.object.metadata {what} has {len(owners)} owners, more than {MAX_OWNERS}")
        for index, owner in enumerate(owners):
            problem = owner_problem(owner)
            if problem:
                raise _Invalid(f"request.object.metadata {what} entry {index} is malformed: {problem}")


def _in_restore_context(obj: Obj, namespace: str, recorder: "_Recorder") -> bool:
    if rules.in_restore_context(obj, None):
        return True
    if not namespace:
        return False
    return rules.in_restore_context(obj, recorder.namespace_labels(namespace))


@dataclass
class _Recorder:
    """Lookups for one request, failing safe: a failed lookup answers "nothing there" and leaves a warning. All of
    them share the request's deadline; one that cannot finish by then skips only the rule that needed it."""

    lookups: Lookups
    deadline: float
    failures: list[tuple[str, str]] = field(default_factory=list)
    request_uid: str = ""
    dry_run: bool = False

    def _check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise LookupFailed("the API server is slow: the request's time for lookups is spent")

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        try:
            self._check_deadline()
            return self.lookups.namespace_labels(namespace, self.deadline)
        except LookupFailed as error:
            self.failures.append(("namespace", f"could not read the labels of namespace {namespace} ({error}): the "
                                               "object was admitted unchanged; label it kvbackup.kubevirt.io/restore "
                                               "to apply the restore rules without that lookup"))
            return None

    def owner_uid(self, owner: Obj, namespace: str) -> str | None:
        """The owner's UID now, or None whenever that is not known: an ownerReference written with an old UID
        gets the object garbage-collected, so nothing is re-pointed at an owner that could not be read."""
        try:
            self._check_deadline()
            return self.lookups.owner_uid(owner, namespace, self.deadline)
        except LookupFailed as error:
            reason = "the webhook may not read it" if error.forbidden else str(error)
            self.failures.append(("owner", f"could not look up owner {owner.get('kind')} {owner.get('name')} "
                                           f"({reason}): no ownerReference to it was written"))
            return None

    def restored_pvc(self, namespace: str, name: str) -> Obj | None:
        """A DataVolume's PVC that exists before the DataVolume was restored with it (CDI creates the PVC after its
        DataVolume): one on its way out does not count."""
        try:
            self._check_deadline()
            pvc = self.lookups.pvc(namespace, name, self.deadline)
        except LookupFailed as error:
            self.failures.append(("pvc", f"could not check for a restored PersistentVolumeClaim {name} ({error}): "
                                         "the DataVolume was not marked prePopulated"))
            return None
        if pvc is None or (pvc.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return pvc

    def identities(self, obj: Obj, policies: IdentityPolicies) -> InUse:
        """Values in use matter only to a collision policy, and only for an object that fixes a value it governs:
        otherwise the webhook lists no VMs or VMIs (and its ClusterRole may not)."""
        if not rules.needs_identities_in_use(obj, policies):
            return set(), set(), set()
        try:  # from the identity index, in memory: checked whatever the deadline left
            return self.lookups.identities(obj, self.request_uid, self.dry_run)
        except IdentitiesUnchecked as error:
            self.failures.append(("identity-index", f"MAC addresses, serials and UUIDs were checked only in part "
                                                    f"({error}): a duplicate of a VM in the cluster may have been "
                                                    "kept"))
            return error.partial
        except LookupFailed as error:
            self.failures.append(("identities", f"could not list the MAC addresses, serials and UUIDs in use "
                                                f"({error}): they were kept as restored"))
            # with nothing known to be in use, a collision policy keeps every value
            return set(), set(), set()

    def reserve_identities(self, before: Obj, after: Obj, policies: IdentityPolicies) -> None:
        """Values the rules let through or handed out are held at once: the next VM of the restore may be admitted
        before any watch has shown this one."""
        if not rules.needs_identities_in_use(before, policies):
            return
        try:
            self.lookups.reserve_identities(after, self.request_uid, self.dry_run)
        except LookupFailed as error:
            self.failures.append(("identities", f"{error}: a VM restored next may get the same values"))


def _restore_context(obj: Obj, policies: IdentityPolicies, recorder: _Recorder) -> RestoreContext:
    # the rules reserve the object's own values on top of what the lookups return (an index's live view, too large
    # to copy per review), never in it
    macs, serials, uuids = (TakenValues(values) for values in recorder.identities(obj, policies))
    return RestoreContext(identity=policies, identities_in_use=IdentitiesInUse(macs, serials, uuids),
                          owner_uid=recorder.owner_uid, restored_pvc=recorder.restored_pvc)
