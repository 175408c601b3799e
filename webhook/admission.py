"""AdmissionReview in, AdmissionReview out: parsing, validation, and the restore rules turned into an answer.

Pure: everything the answer needs from the cluster comes through ``Lookups``. The rules themselves live in
``kubectl_kvbackup.rules``; this module only decides when they apply and how their result is told to the API server
(a JSONPatch diffed from the rules' output, or a denial naming the object, the rule and what to do).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import time
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Protocol

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.kinds import group_of
from kubectl_kvbackup.rules import IdentitiesInUse, IdentityPolicies, RestoreContext, TakenValues

from . import jsonpatch

Obj = dict[str, Any]
InUse = tuple[AbstractSet[str], AbstractSet[str], AbstractSet[str]]  # MACs, serials, UUIDs (rules.identity_values)
API_VERSION = "admission.k8s.io/v1"
HANDLED_KINDS = {(k.group, k.kind) for k in (kinds.DATA_VOLUME, kinds.PVC, kinds.VMI, kinds.POD, kinds.VM)}
log = logging.getLogger("kvbackup_webhook")


#: lookups start only this long into a request: with one API request bounded at 2 s (identities come from memory),
#: every answer leaves inside the 5 s webhook timeout
LOOKUP_BUDGET = 1.5


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
    def namespace_labels(self, namespace: str) -> dict[str, str]: ...

    def owner_uid(self, owner: Obj, namespace: str) -> str | None: ...

    def pvc(self, namespace: str, name: str) -> Obj | None: ...

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
    """The request cannot be answered as asked; ``uid`` is empty when the body is not even an AdmissionReview."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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


def review(body: bytes, lookups: Lookups, policies: IdentityPolicies) -> Outcome:
    try:
        document = _parse(body)
    except _Invalid as error:
        return invalid(error.message)
    request = document.get("request")
    uid = request.get("uid") if isinstance(request, dict) and isinstance(request.get("uid"), str) else ""
    try:
        _check_review(document, uid)
    except _Invalid as error:
        return invalid(error.message, uid=uid)
    kind = _kind_name(request)
    try:
        return _judge(request, lookups, policies)
    except _Invalid as error:
        return invalid(error.message, http_status=200, uid=uid, kind=kind)
    except Exception as error:  # a rule tripped over an object we did not foresee: deny clearly, never a 500
        log.exception("restore rules failed on request %s", uid)
        return invalid(f"could not apply the restore rules to this object ({type(error).__name__}: {error}); "
                       "please report it", http_status=200, uid=uid, kind=kind)


def _parse(body: bytes) -> Obj:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise _Invalid(f"the request body is not JSON: {error}") from None
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


def _judge(request: Obj, lookups: Lookups, policies: IdentityPolicies) -> Outcome:
    uid = request["uid"]
    started = time.monotonic()
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
    if rules.is_system_request(username):
        return Outcome(200, answer(uid, True), kind, "allowed")
    obj = _require(request, "object", dict, f"the {kind} being created")
    namespace = request.get("namespace") or ""
    if not isinstance(namespace, str):
        raise _Invalid("request.namespace is malformed: expected a string")
    work = _working_copy(obj, kind_ref, namespace)
    namespace = work["metadata"].get("namespace") or ""
    failures: list[tuple[str, str]] = []
    if not _in_restore_context(work, namespace, lookups, failures):
        return _allowed(uid, kind, [], failures)
    decision = rules.restore_decision(work)
    if not decision.restore:
        name = work["metadata"].get("name") or work["metadata"].get("generateName", "")
        message = (f"kvbackup restore rules: {kind} {namespace}/{name} must not be restored (rule {decision.rule}): "
                   f"{decision.reason}; leave it out of the restore")
        return Outcome(200, answer(uid, False, code=403, reason="Forbidden", message=message), kind, "denied")
    recorder = _Recorder(lookups, failures, started, uid, request.get("dryRun") is True)
    context = _restore_context(work, policies, recorder)
    mutated, changes = rules.restore_object(work, context)
    recorder.reserve_identities(work, mutated, policies)
    return _allowed(uid, kind, jsonpatch.diff(work, mutated), failures, [f"changed {change}" for change in changes])


def _allowed(uid: str, kind: str, patch: list[Obj], failures: list[tuple[str, str]],
             notes: list[str] | None = None) -> Outcome:
    warnings = [f"kvbackup: {text}" for text in [*(notes or []), *(text for _, text in failures)]]
    return Outcome(200, answer(uid, True, patch=patch, warnings=warnings),
                   kind, "patched" if patch else "allowed", tuple(lookup for lookup, _ in failures))


def _working_copy(obj: Obj, kind_ref: Obj, namespace: str) -> Obj:
    """The object as the rules expect it. What the API server fills in later (namespace) or omits in the review
    (apiVersion/kind) is taken from the request, so the diff never touches it."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise _Invalid("request.object.metadata is missing or malformed")
    for name, expected in (("labels", dict), ("annotations", dict), ("ownerReferences", list)):
        if meta.get(name) is not None and not isinstance(meta[name], expected):
            raise _Invalid(f"request.object.metadata.{name} is malformed: expected a {expected.__name__}")
    if any(not isinstance(owner, dict) for owner in meta.get("ownerReferences") or []):
        raise _Invalid("request.object.metadata.ownerReferences is malformed: expected objects")
    work = copy.deepcopy(obj)
    group, version = kind_ref.get("group", ""), kind_ref.get("version", "")
    work.setdefault("apiVersion", f"{group}/{version}" if group else version)
    work.setdefault("kind", kind_ref["kind"])
    if group_of(work["apiVersion"]) != group or work["kind"] != kind_ref["kind"]:
        raise _Invalid(f"request.object is a {work['apiVersion']} {work['kind']} but request.kind says "
                       f"{group}/{version} {kind_ref['kind']}")
    if namespace:
        work["metadata"].setdefault("namespace", namespace)
    return work


def _in_restore_context(obj: Obj, namespace: str, lookups: Lookups, failures: list[tuple[str, str]]) -> bool:
    if rules.in_restore_context(obj, None):
        return True
    if not namespace:
        return False
    try:
        return rules.in_restore_context(obj, lookups.namespace_labels(namespace))
    except LookupFailed as error:
        failures.append(("namespace", f"could not read the labels of namespace {namespace} ({error}): the object "
                                      "was admitted unchanged; label it kvbackup.kubevirt.io/restore to apply the "
                                      "restore rules without that lookup"))
        return False


@dataclass
class _Recorder:
    """Lookups for one request, failing safe: a failed lookup answers "nothing there" and leaves a warning; once the
    request's lookup budget is spent, further lookups are skipped the same way."""

    lookups: Lookups
    failures: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    request_uid: str = ""
    dry_run: bool = False

    def _check_budget(self) -> None:
        if time.monotonic() - self.started > LOOKUP_BUDGET:
            raise LookupFailed(f"the API server is slow: lookups stop {LOOKUP_BUDGET}s into a request")

    def owner_uid(self, owner: Obj, namespace: str) -> str | None:
        try:
            self._check_budget()
            return self.lookups.owner_uid(owner, namespace)
        except LookupFailed as error:
            if error.forbidden:
                # a kind the webhook may not read belongs to some other controller, whose reference is live
                self.failures.append(("owner", f"may not read owner {owner.get('kind')} {owner.get('name')}: its "
                                               "ownerReference was kept as it is"))
                return owner.get("uid")
            # an ownerReference kept with an old UID gets the object garbage-collected: dropping it is the safe side
            self.failures.append(("owner", f"could not look up owner {owner.get('kind')} {owner.get('name')} "
                                           f"({error}): its ownerReference was dropped"))
            return None

    def restored_pvc(self, namespace: str, name: str) -> Obj | None:
        """A DataVolume's PVC that exists before the DataVolume was restored with it (CDI creates the PVC after its
        DataVolume): one on its way out does not count."""
        try:
            self._check_budget()
            pvc = self.lookups.pvc(namespace, name)
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
        try:
            self._check_budget()
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
