"""The webhook app through Flask's test client: golden AdmissionReviews, malformed input, JSONPatch generation."""

from __future__ import annotations

import base64
import json
import os
import random
import time
from typing import Any

import pytest

from kubectl_kvbackup import rules
from kvbackup_webhook import admission, create_app, jsonpatch

from .fakeapi import jsonpatch as apply_patch

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webhook_fixtures")
CASES = sorted(name[:-5] for name in os.listdir(FIXTURES) if name.endswith(".json"))
Obj = dict[str, Any]


class StaticLookups:
    """A cluster described by a fixture's ``cluster`` section; lookups named in ``fail`` raise LookupFailed."""

    def __init__(self, cluster: Obj | None = None):
        cluster = cluster or {}
        self.namespaces: dict[str, dict[str, str]] = cluster.get("namespaces", {})
        self.owners: dict[str, str] = cluster.get("owners", {})
        self.pvcs: dict[str, Obj] = cluster.get("pvcs", {})
        self.in_use = tuple(set(values) for values in cluster.get("identities", [[], [], []]))
        self.fail = set(cluster.get("fail", []))
        self.forbidden = set(cluster.get("forbidden", []))
        self.delay = float(cluster.get("delay", 0))
        self.calls: list[str] = []

    def _call(self, lookup: str) -> None:
        self.calls.append(lookup)
        if self.delay:
            __import__("time").sleep(self.delay)
        if lookup in self.forbidden:
            raise admission.LookupFailed("forbidden", forbidden=True)
        if lookup in self.fail:
            raise admission.LookupFailed("timed out")

    def namespace_labels(self, namespace: str, deadline: float) -> dict[str, str]:
        self._call("namespace")
        return self.namespaces.get(namespace, {})

    def owner_uid(self, owner: Obj, namespace: str, deadline: float) -> str | None:
        self._call("owner")
        return self.owners.get(f"{owner['kind']}/{namespace}/{owner['name']}")

    def pvc(self, namespace: str, name: str, deadline: float) -> Obj | None:
        self._call("pvc")
        return self.pvcs.get(f"{namespace}/{name}")

    def identities(self, obj: Obj, request_uid: str, dry_run: bool) -> tuple[set[str], set[str], set[str]]:
        self._call("identities")
        return self.in_use  # type: ignore[return-value]

    def reserve_identities(self, obj: Obj, request_uid: str, dry_run: bool) -> None:
        self.calls.append("reserve")


def load(name: str) -> Obj:
    with open(os.path.join(FIXTURES, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def post(client, body: bytes | Obj):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/mutate", data=data, content_type="application/json")


def app_for(cluster: Obj | None = None, **config: Any):
    return create_app({"LOOKUPS": StaticLookups(cluster), **config})


def decoded_patch(response: Obj) -> list[Obj]:
    return json.loads(base64.b64decode(response["patch"])) if "patch" in response else []


@pytest.mark.parametrize("name", CASES)
def test_golden_admission_review(name: str) -> None:
    case = load(name)
    client = app_for(case.get("cluster")).test_client()
    result = post(client, case["raw"].encode() if "raw" in case else case["review"])
    expect = case["expect"]
    assert result.status_code == expect["http"]
    body = result.get_json()
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = body["response"]
    request_uid = (case.get("review") or {}).get("request", {}).get("uid", "")
    assert response["uid"] == request_uid
    assert response["allowed"] is expect["allowed"]
    if expect["allowed"]:
        assert decoded_patch(response) == expect["patch"]
        assert response.get("patchType") == ("JSONPatch" if expect["patch"] else None)
    else:
        assert response["status"]["code"] == expect["code"]
        for text in expect["message"]:
            assert text in response["status"]["message"]
    for text in expect.get("warnings", []):
        assert any(text in warning for warning in response.get("warnings", []))


@pytest.mark.parametrize("name", [n for n in CASES if "raw" not in load(n) and load(n)["expect"]["allowed"]])
def test_patch_applies_to_the_object_and_equals_the_rules_output(name: str) -> None:
    """The patch is what the API server applies: applied to the request's object it must give the rules' result."""
    case = load(name)
    response = post(app_for(case.get("cluster")).test_client(), case["review"]).get_json()["response"]
    obj = case["review"]["request"]["object"]
    patched = apply_patch.apply(obj, decoded_patch(response))
    if response.get("patch"):
        assert patched != obj
        # idempotent: the patched object, reviewed again, needs nothing more (except fresh random serials)
        again = {**case["review"], "request": {**case["review"]["request"], "object": patched}}
        second = post(app_for(case.get("cluster")).test_client(), again).get_json()["response"]
        assert decoded_patch(second) == []


def test_dry_run_answers_as_a_real_request() -> None:
    client = app_for().test_client()
    real, dry = load("dv-succeeded-velero")["review"], load("dv-succeeded-dry-run")["review"]
    assert dry["request"]["dryRun"] is True
    assert decoded_patch(post(client, real).get_json()["response"]) == \
        decoded_patch(post(client, dry).get_json()["response"])


def test_an_admission_review_over_3_mib_is_refused_with_413_not_a_crash() -> None:
    review = load("dv-succeeded-velero")["review"]
    review["request"]["object"]["metadata"]["annotations"] = {"blob": "x" * (3 * 1024 * 1024)}
    client = app_for().test_client()
    result = post(client, review)
    assert result.status_code == 413
    body = result.get_json()
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["code"] == 413
    assert "larger than 3145728 bytes" in body["response"]["status"]["message"]
    # the app goes on answering
    assert post(client, load("dv-succeeded-velero")["review"]).status_code == 200


def test_a_smaller_limit_is_configurable() -> None:
    client = app_for(MAX_CONTENT_LENGTH=1000).test_client()
    assert post(client, load("pvc-of-datavolume-owner-restored")["review"]).status_code == 413


def test_wrong_method_and_path_answer_json_not_html() -> None:
    client = app_for().test_client()
    wrong_method = client.get("/mutate")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["code"] == 405
    assert client.post("/validate", data=b"{}").status_code == 404


def test_a_rule_failing_unexpectedly_is_a_clear_denial_not_a_500(caplog) -> None:
    review = load("vm-mac-collision")["review"]
    review["request"]["object"]["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = "eth0"
    result = post(app_for().test_client(), review)
    assert result.status_code == 200
    response = result.get_json()["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "could not apply the restore rules" in response["status"]["message"]
    assert any(r.exc_info and "restore rules failed on request 0d6a1c2e-db" in r.getMessage() for r in caplog.records)


def test_system_service_accounts_never_trigger_lookups() -> None:
    """KubeVirt's and CDI's own creates are answered before any cluster lookup: a slow API server cannot slow them."""
    lookups = StaticLookups()
    client = create_app({"LOOKUPS": lookups}).test_client()
    for name in ("launcher-pod-from-kubevirt-controller", "vmi-owned-by-vm-from-kubevirt-controller"):
        assert post(client, load(name)["review"]).get_json()["response"]["allowed"] is True
    pvc_from_cdi = load("pvc-of-datavolume-owner-restored")["review"]
    pvc_from_cdi["request"]["userInfo"]["username"] = "system:serviceaccount:cdi:cdi-sa"
    assert "patch" not in post(client, pvc_from_cdi).get_json()["response"]
    assert lookups.calls == []


def test_failed_namespace_lookup_admits_unlabelled_objects_unchanged_with_a_warning() -> None:
    review = load("dv-restore-mode-namespace")
    response = post(app_for({"fail": ["namespace"]}).test_client(), review["review"]).get_json()["response"]
    assert response["allowed"] is True and "patch" not in response
    assert "could not read the labels of namespace dr" in response["warnings"][0]


def test_metrics_count_requests_by_kind_and_decision() -> None:
    client = app_for().test_client()
    for name in ("dv-succeeded-velero", "launcher-pod-denied", "dv-not-restore-context", "malformed-json"):
        case = load(name)
        post(client, case["raw"].encode() if "raw" in case else case["review"])
    text = client.get("/metrics").get_data(as_text=True)
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="patched"} 1' in text
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="allowed"} 1' in text
    assert 'kvbackup_webhook_requests_total{kind="Pod",decision="denied"} 1' in text
    assert 'kvbackup_webhook_requests_total{kind="other",decision="invalid"} 1' in text
    assert 'kvbackup_webhook_request_duration_seconds_bucket{le="+Inf"} 4' in text
    assert "kvbackup_webhook_request_duration_seconds_count 4" in text
    assert client.get("/healthz").get_data() == b"ok\n" and client.get("/readyz").status_code == 200


def test_metrics_count_failed_lookups() -> None:
    client = app_for({"fail": ["owner"]}).test_client()
    post(client, load("pvc-of-datavolume-owner-restored")["review"])
    assert 'kvbackup_webhook_lookup_failures_total{lookup="owner"} 1' in client.get("/metrics").get_data(as_text=True)


# --- JSONPatch generation --------------------------------------------------------------------------------------

def test_escaping_per_rfc_6901() -> None:
    assert jsonpatch.escape("a/b~c") == "a~1b~0c"
    assert jsonpatch.escape("~1") == "~01"
    patch = jsonpatch.diff({"m": {}}, {"m": {"x/y": 1, "~": 2}})
    assert patch == [{"op": "add", "path": "/m/x~1y", "value": 1}, {"op": "add", "path": "/m/~0", "value": 2}]


def test_diff_is_minimal_for_common_changes() -> None:
    assert jsonpatch.diff({"a": 1}, {"a": 1}) == []
    assert jsonpatch.diff({"metadata": {"name": "x"}}, {"metadata": {"name": "x", "annotations": {"k": "v"}}}) == \
        [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}]
    assert jsonpatch.diff({"a": [1, 2, 3]}, {"a": [1, 5, 3]}) == [{"op": "replace", "path": "/a/1", "value": 5}]
    assert jsonpatch.diff({"a": [1, 2, 3]}, {"a": [1, 3]}) == [{"op": "replace", "path": "/a", "value": [1, 3]}]
    assert jsonpatch.diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert jsonpatch.diff([1], {"a": 1}) == [{"op": "replace", "path": "", "value": {"a": 1}}]


def _random_value(rng: random.Random, depth: int) -> Any:
    choice = rng.randrange(6 if depth < 3 else 4)
    if choice == 0:
        return rng.randrange(3)
    if choice == 1:
        return rng.choice(["a", "b/c", "~d", ""])
    if choice == 2:
        return rng.choice([None, True, False])
    if choice == 3:
        return rng.random()
    if choice == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["k", "x/y", "~z", "a~1", ""]): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.7:
        result = dict(value)
        key = rng.choice(list(result))
        action = rng.randrange(3)
        if action == 0:
            del result[key]
        elif action == 1:
            result[key] = _mutate(rng, result[key], depth + 1)
        else:
            result[rng.choice(["new", "n/e", "w~"])] = _random_value(rng, depth)
        return result
    if isinstance(value, list) and value and rng.random() < 0.7:
        result = list(value)
        index = rng.randrange(len(result))
        result[index] = _mutate(rng, result[index], depth + 1)
        if rng.random() < 0.3:
            result.append(_random_value(rng, depth))
        return result
    return _random_value(rng, depth)


def test_diff_then_apply_round_trips_on_random_documents() -> None:
    rng = random.Random(20241124)
    for _ in range(2000):
        before = _random_value(rng, 0)
        after = _mutate(rng, before)
        assert apply_patch.apply(before, jsonpatch.diff(before, after)) == after


def test_rules_module_is_what_the_webhook_calls() -> None:
    """No rule is re-implemented here: the webhook's prePopulated value is the rules' constant and result."""
    review = load("dv-succeeded-velero")["review"]
    response = post(app_for().test_client(), review).get_json()["response"]
    expected = rules.restore_object(review["request"]["object"], rules.RestoreContext()).object
    assert apply_patch.apply(review["request"]["object"], decoded_patch(response)) == expected


def test_every_lookup_of_a_request_shares_its_deadline() -> None:
    """Each lookup is handed the one deadline of the request, so a slow API server cannot stretch the answer."""
    deadlines: list[float] = []

    class Recording(StaticLookups):
        def _call(self, lookup: str, deadline: float = 0.0) -> None:
            super()._call(lookup)

        def namespace_labels(self, namespace: str, deadline: float) -> dict[str, str]:
            deadlines.append(deadline)
            return super().namespace_labels(namespace, deadline)

        def owner_uid(self, owner: Obj, namespace: str, deadline: float) -> str | None:
            deadlines.append(deadline)
            return super().owner_uid(owner, namespace, deadline)

    review = load("pvc-of-datavolume-owner-restored")["review"]
    review["request"]["object"]["metadata"]["labels"] = {}  # so the namespace is looked up too
    meta = review["request"]["object"]["metadata"]
    owners = json.loads(meta["annotations"][rules.OWNER_REFERENCES_ANNOTATION])
    meta["annotations"][rules.OWNER_REFERENCES_ANNOTATION] = json.dumps(
        [{**owners[0], "name": f"dv-{i}", "controller": i == 0} for i in range(3)])
    lookups = Recording({"namespaces": {"prod": {rules.RESTORE_MODE_NAMESPACE_LABEL: "enabled"}}})
    before = time.monotonic()
    admission.review(json.dumps(review).encode(), lookups,
                     rules.IdentityPolicies(rules.MacPolicy.KEEP, rules.FirmwarePolicy.KEEP))
    assert len(deadlines) == 4 and len(set(deadlines)) == 1
    assert deadlines[0] >= before + admission.LOOKUP_DEADLINE


@pytest.mark.parametrize("name", ["pvc-of-datavolume-owner-restored", "dv-restore-mode-namespace",
                                  "dv-status-stripped-pvc-restored"])
def test_once_the_deadline_has_passed_no_lookup_starts_and_only_their_rules_are_skipped(name: str) -> None:
    case = load(name)
    lookups = StaticLookups(case.get("cluster"))
    outcome = admission.review(json.dumps(case["review"]).encode(), lookups, rules.IdentityPolicies(),
                               deadline=time.monotonic())
    assert lookups.calls == []
    response = outcome.review["response"]
    assert outcome.http_status == 200 and response["allowed"] is True
    assert outcome.failed_lookups and all("time for lookups is spent" in w for w in response["warnings"])


def test_identities_are_checked_from_memory_even_past_the_deadline() -> None:
    """The identity index answers without an API call: a slow namespace or owner lookup never costs a collision
    check."""
    case = load("vm-mac-collision")
    lookups = StaticLookups(case.get("cluster"))
    outcome = admission.review(json.dumps(case["review"]).encode(), lookups, rules.IdentityPolicies(),
                               deadline=time.monotonic())
    assert lookups.calls == ["identities", "reserve"]
    assert decoded_patch(outcome.review["response"]) == case["expect"]["patch"]


def test_system_accounts_count_only_in_the_system_namespaces() -> None:
    """A tenant can create a ServiceAccount named kubevirt-controller in their own namespace: that is no system."""
    lookups = StaticLookups()
    client = create_app({"LOOKUPS": lookups}).test_client()
    review = load("launcher-pod-from-kubevirt-controller")["review"]
    review["request"]["userInfo"]["username"] = "system:serviceaccount:tenant:kubevirt-controller"
    review["request"]["object"]["metadata"].setdefault("labels", {})[rules.RESTORE_LABEL] = "r1"
    response = post(client, review).get_json()["response"]
    assert response["allowed"] is False and "must not be restored" in response["status"]["message"]
    elsewhere = create_app({"LOOKUPS": lookups, "SYSTEM_NAMESPACES": "virt, tenant"}).test_client()
    assert post(elsewhere, review).get_json()["response"]["allowed"] is True


@pytest.mark.parametrize("depth", [990, 1000, 5000, 100_000])
def test_deeply_nested_json_gets_an_admission_review_answer(depth: int) -> None:
    review = load("vm-mac-collision")["review"]
    review["request"]["object"]["spec"]["x"] = None
    body = json.dumps(review).replace('"x": null', '"x": ' + "[" * depth + "]" * depth).encode()
    result = post(app_for().test_client(), body)
    assert result.status_code in (200, 400) and result.get_json()["kind"] == "AdmissionReview"
    response = result.get_json()["response"]
    if depth > 1000:  # past what Python's parser takes: refused as such, never a 500
        assert response["allowed"] is False and "nested too deeply" in response["status"]["message"]


SET_ASIDE = rules.OWNER_REFERENCES_ANNOTATION


def _with_set_aside_owners(owners: Any) -> Obj:
    review = load("pvc-of-datavolume-owner-restored")["review"]
    meta = review["request"]["object"]["metadata"]
    meta.pop("ownerReferences", None)
    meta.setdefault("annotations", {})[SET_ASIDE] = owners if isinstance(owners, str) else json.dumps(owners)
    return review


GOOD_OWNER = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "fedora-root", "uid": "old",
              "controller": True}


@pytest.mark.parametrize("owners, problem", [
    ([{**GOOD_OWNER, "name": ".."}], "is not a DNS-1123 subdomain"),
    ([{**GOOD_OWNER, "name": "a/b"}], "is not a DNS-1123 subdomain"),
    ([{**GOOD_OWNER, "name": 7}], "name is not a string"),
    ([{**GOOD_OWNER, "kind": "../x"}], "is not a Kind"),
    ([{**GOOD_OWNER, "apiVersion": "cdi.kubevirt.io/../v1"}], "is not GROUP/VERSION"),
    ([{**GOOD_OWNER, "apiVersion": "/v1"}], "is not GROUP/VERSION"),
    ([{**GOOD_OWNER, "uid": ["x"]}], "uid is not a string"),
    ([{**GOOD_OWNER, "controller": "yes"}], "controller is not true or false"),
    ([{**GOOD_OWNER, "x": [[[]]]}], "unknown field 'x'"),
    (["DataVolume/fedora-root"], "expected an object"),
    ([GOOD_OWNER] * (admission.MAX_OWNERS + 1), f"more than {admission.MAX_OWNERS}"),
    ({"owners": []}, "expected a JSON list"),
    ("[{", "expected a JSON list"),
])
def test_set_aside_owners_are_checked_before_any_lookup(owners: Any, problem: str) -> None:
    lookups = StaticLookups()
    response = post(create_app({"LOOKUPS": lookups}).test_client(), _with_set_aside_owners(owners)).get_json()
    status = response["response"]["status"]
    assert status["code"] == 400 and problem in status["message"] and SET_ASIDE in status["message"]
    assert lookups.calls == []


def test_live_owner_references_are_checked_like_set_aside_ones() -> None:
    review = load("pvc-of-datavolume-owner-restored")["review"]
    review["request"]["object"]["metadata"]["ownerReferences"] = [{**GOOD_OWNER, "name": "../../namespaces/kube-system"}]
    lookups = StaticLookups()
    status = post(create_app({"LOOKUPS": lookups}).test_client(), review).get_json()["response"]["status"]
    assert status["code"] == 400 and "ownerReferences entry 0" in status["message"] and lookups.calls == []


@pytest.mark.parametrize("failure", ["fail", "forbidden"])
def test_an_owner_that_cannot_be_read_is_never_re_pointed_at_its_old_uid(failure: str) -> None:
    review = _with_set_aside_owners([GOOD_OWNER])
    response = post(app_for({failure: ["owner"]}).test_client(), review).get_json()["response"]
    patched = apply_patch.apply(review["request"]["object"], decoded_patch(response))
    assert "ownerReferences" not in patched["metadata"]
    assert any("no ownerReference to it was written" in w for w in response["warnings"])


# --- what each check of the admission core holds (each case fails when that check is removed or inverted) -------

def _review_with(name: str, change) -> Obj:
    review = json.loads(json.dumps(load(name)["review"]))
    change(review["request"])
    return review


def _answer(review: Obj, cluster: Obj | None = None, **config: Any) -> Obj:
    return post(app_for(cluster, **config).test_client(), review).get_json()["response"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r["kind"].update(kind=5), "request.kind is malformed"),
    (lambda r: r["kind"].update(group=["cdi.kubevirt.io"]), "request.kind is malformed"),
    (lambda r: r.update(kind="DataVolume"), "request.kind is malformed"),
    (lambda r: r.update(operation=1), "request.operation is malformed"),
    (lambda r: r["userInfo"].update(username=["system:admin"]), "request.userInfo.username is malformed"),
    (lambda r: r.update(namespace={"name": "prod"}), "request.namespace is malformed"),
    (lambda r: r["object"]["metadata"].update(ownerReferences=[["DataVolume"]]), "ownerReferences entry 0"),
    (lambda r: r["object"]["metadata"].update(ownerReferences={"kind": "DataVolume"}), "expected a list"),
])
def test_malformed_fields_are_named_not_reported_as_a_rule_failure(change, message: str) -> None:
    response = _answer(_review_with("dv-succeeded-velero", change))
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert message in response["status"]["message"] and "please report it" not in response["status"]["message"]


def test_an_object_without_metadata_namespace_is_in_the_namespace_of_the_request() -> None:
    review = _review_with("dv-restore-mode-namespace", lambda r: r["object"]["metadata"].pop("namespace"))
    case = load("dv-restore-mode-namespace")
    response = _answer(review, case["cluster"])
    assert decoded_patch(response) == case["expect"]["patch"]


def test_an_object_without_apiversion_and_kind_takes_them_from_the_request() -> None:
    def strip(request: Obj) -> None:
        del request["object"]["apiVersion"], request["object"]["kind"]
    response = _answer(_review_with("dv-succeeded-velero", strip))
    assert decoded_patch(response) == load("dv-succeeded-velero")["expect"]["patch"]


def test_a_pvc_on_its_way_out_does_not_count_as_restored() -> None:
    case = load("dv-status-stripped-pvc-restored")
    cluster = json.loads(json.dumps(case["cluster"]))
    cluster["pvcs"]["prod/disk-a"]["metadata"]["deletionTimestamp"] = "2024-11-24T10:00:00Z"
    assert decoded_patch(_answer(case["review"], cluster)) == []
    assert decoded_patch(_answer(case["review"], case["cluster"])) == case["expect"]["patch"]


def test_identities_in_use_are_listed_only_when_a_collision_decides() -> None:
    review = load("vm-mac-collision")["review"]
    for mac, firmware, listed in (("keep", "keep", False), ("clear", "regenerate", False),
                                  ("regenerate-on-collision", "keep", True)):
        lookups = StaticLookups()
        post(create_app({"LOOKUPS": lookups, "MAC_POLICY": mac, "FIRMWARE_POLICY": firmware}).test_client(), review)
        assert ("identities" in lookups.calls) is listed, (mac, firmware)
    no_identity = _review_with("vm-mac-collision", lambda r: r["object"]["spec"]["template"]["spec"].update(
        domain={"devices": {}}))
    lookups = StaticLookups()
    post(create_app({"LOOKUPS": lookups}).test_client(), no_identity)
    assert "identities" not in lookups.calls  # nothing to collide


def test_refusals_say_which_kind_of_refusal_they_are() -> None:
    too_large = post(app_for(MAX_CONTENT_LENGTH=1000).test_client(), load("vm-mac-collision")["review"]).get_json()
    assert too_large["response"]["status"]["reason"] == "RequestEntityTooLarge"
    assert too_large["response"]["status"]["code"] == 413
    bad = post(app_for().test_client(), b"{not json").get_json()
    assert bad["response"]["status"]["reason"] == "BadRequest" and bad["response"]["status"]["code"] == 400


def test_metrics_count_invalid_requests_under_their_kind() -> None:
    client = app_for().test_client()
    post(client, _review_with("vm-mac-collision", lambda r: r.update(namespace=7)))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'kvbackup_webhook_requests_total{kind="VirtualMachine",decision="invalid"} 1' in text


def test_a_lookup_failure_is_told_with_its_cause() -> None:
    response = _answer(load("pvc-owner-lookup-fails")["review"], {"fail": ["owner"]})
    assert any("(timed out)" in warning for warning in response["warnings"])


@pytest.mark.parametrize("stashed, problem", [("", None), (5, "expected a JSON list"), ("null", "expected a JSON list")])
def test_the_set_aside_annotation_must_be_a_json_list(stashed: Any, problem: str | None) -> None:
    review = _with_set_aside_owners([])
    review["request"]["object"]["metadata"]["annotations"][SET_ASIDE] = stashed
    response = _answer(review)
    if problem:
        assert response["allowed"] is False and problem in response["status"]["message"]
    else:
        assert response["allowed"] is True


def _vm_with(value: Any) -> Obj:
    return _review_with("vm-mac-collision", lambda r: r["object"]["spec"].update(extra=value))


@pytest.mark.parametrize("value, refused", [
    ([{}] * admission.MAX_NODES, True),  # with the VM's own objects, over the limit
    ({f"k{i}": [] for i in range(admission.MAX_NODES)}, True),
    ([[{"a": {}}]] * (admission.MAX_NODES // 3), True),  # counted however deep
    ([{}] * (admission.MAX_NODES - 100), False),
])
def test_objects_of_more_json_nodes_than_any_restorable_object_are_refused(value: Any, refused: bool) -> None:
    response = _answer(_vm_with(value))
    if refused:
        assert response["allowed"] is False and "more than 50000 JSON objects" in response["status"]["message"]
    else:
        assert response["allowed"] is True


def test_the_node_limit_applies_only_to_objects_being_restored() -> None:
    review = _vm_with([{}] * admission.MAX_NODES)
    review["request"]["object"]["metadata"]["labels"] = {}
    assert _answer(review)["allowed"] is True


def test_an_object_of_a_request_without_namespace_keeps_its_own() -> None:
    case = load("dv-restore-mode-namespace")
    review = _review_with("dv-restore-mode-namespace", lambda r: r.pop("namespace"))
    assert decoded_patch(_answer(review, case["cluster"])) == case["expect"]["patch"]


def test_the_namespace_is_looked_up_only_for_unlabelled_objects_that_have_one() -> None:
    for review in (load("dv-succeeded-velero")["review"],
                   _review_with("dv-restore-mode-namespace",
                                lambda r: (r.pop("namespace"), r["object"]["metadata"].pop("namespace")))):
        lookups = StaticLookups()
        post(create_app({"LOOKUPS": lookups}).test_client(), review)
        assert "namespace" not in lookups.calls


def test_metrics_tell_patched_from_allowed() -> None:
    client = app_for().test_client()
    for name in ("dv-succeeded-velero", "dv-succeeded-velero", "dv-not-restore-context"):
        post(client, load(name)["review"])
    text = client.get("/metrics").get_data(as_text=True)
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="patched"} 2' in text
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="allowed"} 1' in text
