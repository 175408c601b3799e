"""Identity rules (MAC addresses, firmware serial and UUID) and the webhook and install settings that choose them."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import yaml

from kubectl_kvbackup import manifests, rules
from kubectl_kvbackup.rules import (FirmwarePolicy, IdentitiesInUse, IdentityPolicies, MacPolicy, RestoreContext,
                                    apply_identity_policy)
from kubectl_kvbackup.rules.identity import stable_firmware_value, stable_mac
from kvbackup_webhook import create_app

from .helpers import RolloutController, obj
from .test_webhook import StaticLookups, decoded_patch, load, post
from .test_webhook_install import by_kind, run

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
FOREIGN_UUID = "5d307ca9-b3ef-428c-8861-06e72d69f223"
IFACES = "spec.template.spec.domain.devices.interfaces"


def vm(name: str = "db", namespace: str = "prod", macs=(MAC_A, MAC_B), serial: str | None = "s-1",
       firmware_uuid: str | None = FOREIGN_UUID) -> dict:
    firmware = {key: value for key, value in (("serial", serial), ("uuid", firmware_uuid)) if value}
    interfaces = [{"name": f"nic{i}", "macAddress": mac} for i, mac in enumerate(macs)]
    return obj("kubevirt.io/v1", "VirtualMachine", name, namespace,
               spec={"template": {"spec": {"domain": {"devices": {"interfaces": interfaces}, "firmware": firmware}}}})


def domain(result: dict) -> dict:
    return result["spec"]["template"]["spec"]["domain"]


def macs_of(result: dict) -> list[str | None]:
    return [i.get("macAddress") for i in domain(result)["devices"]["interfaces"]]


def apply(obj_: dict, in_use: IdentitiesInUse | None = None, mac=MacPolicy.REGENERATE_ON_COLLISION,
          firmware=FirmwarePolicy.REGENERATE_ON_COLLISION):
    return apply_identity_policy(obj_, IdentityPolicies(mac, firmware), in_use or IdentitiesInUse())


def is_locally_administered_unicast(mac: str) -> bool:
    first = int(mac.split(":")[0], 16)
    return first & 0x02 == 0x02 and first & 0x01 == 0


# --- MAC addresses ---

def test_a_colliding_mac_is_replaced_by_a_stable_locally_administered_unicast_address_and_reported():
    result, changes = apply(vm(), IdentitiesInUse(macs={MAC_A}))
    new, kept = macs_of(result)
    assert kept == MAC_B
    assert new not in (MAC_A, MAC_B) and is_locally_administered_unicast(new)
    assert new == stable_mac("prod", "db", "nic0", 0)
    assert changes == [rules.Change("identity", f"{IFACES}[0].macAddress", MAC_A, new,
                                    "already in use in the cluster or this restore")]
    again, _ = apply(vm(), IdentitiesInUse(macs={MAC_A}))
    assert macs_of(again) == macs_of(result)  # a re-run gives the same address
    elsewhere, _ = apply(vm(namespace="dr"), IdentitiesInUse(macs={MAC_A}))
    assert macs_of(elsewhere)[0] != new


def test_a_new_mac_is_in_use_nowhere_in_the_cluster_or_the_object():
    first, second = stable_mac("prod", "db", "nic0", 0), stable_mac("prod", "db", "nic0", 1)
    taken, _ = apply(vm(), IdentitiesInUse(macs={MAC_A, first}))
    assert macs_of(taken)[0] == second
    beside, _ = apply(vm(macs=(MAC_A, first)), IdentitiesInUse(macs={MAC_A}))
    assert macs_of(beside) == [second, first]


def test_values_taken_on_top_of_a_shared_snapshot_are_seen_and_never_change_it():
    snapshot = frozenset({MAC_A, stable_mac("prod", "db", "nic0", 0)})
    in_use = IdentitiesInUse(macs=rules.TakenValues(snapshot))
    result, _ = apply(vm(), in_use)
    assert macs_of(result)[0] == stable_mac("prod", "db", "nic0", 1)  # the snapshot's values are taken
    in_use.reserve(result)  # as restore_object does: the next object of the restore sees these too
    assert stable_mac("prod", "db", "nic0", 1) in in_use.macs and MAC_B in in_use.macs and len(in_use.macs) == 4
    assert snapshot == {MAC_A, stable_mac("prod", "db", "nic0", 0)}
    with pytest.raises(ValueError):
        in_use.macs.discard(MAC_A)


def test_mac_comparison_ignores_case_and_separator():
    result, changes = apply(vm(macs=("02-00-00-00-00-01",)), IdentitiesInUse(macs={MAC_A}))
    assert len(changes) == 1 and macs_of(result)[0] != "02-00-00-00-00-01"
    assert rules.identity_values(vm(macs=("02-00-00-AA-BB-CC",), serial="s", firmware_uuid=None)) == (
        {"02:00:00:aa:bb:cc"}, {"s"}, set())


def test_mac_policy_regenerate_replaces_every_mac_once():
    result, changes = apply(vm(), mac=MacPolicy.REGENERATE)
    assert macs_of(result) == [stable_mac("prod", "db", "nic0", 0), stable_mac("prod", "db", "nic1", 0)]
    assert [c.reason for c in changes if "macAddress" in c.path] == ["MAC policy regenerate"] * 2
    again, more = apply(result, mac=MacPolicy.REGENERATE)
    assert macs_of(again) == macs_of(result) and not [c for c in more if "macAddress" in c.path]


def test_mac_policy_clear_removes_every_mac_and_keep_leaves_them():
    cleared, changes = apply(vm(), mac=MacPolicy.CLEAR)
    assert macs_of(cleared) == [None, None]
    assert [(c.old, c.new) for c in changes if "macAddress" in c.path] == [(MAC_A, None), (MAC_B, None)]
    kept, changes = apply(vm(), IdentitiesInUse(macs={MAC_A, MAC_B}), mac=MacPolicy.KEEP)
    assert macs_of(kept) == [MAC_A, MAC_B] and not [c for c in changes if "macAddress" in c.path]


def test_macs_in_use_include_what_running_vmis_report():
    vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "web", "prod",
              status={"interfaces": [{"name": "default", "mac": "02:00:00:00:00:01"}]})
    macs, _, _ = rules.identity_values(vmi)
    assert macs == {MAC_A}
    result, _ = apply(vm(), IdentitiesInUse(macs=macs))
    assert macs_of(result)[0] != MAC_A


def test_interfaces_a_vmi_reports_without_a_mac_yet_are_skipped():
    vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "web", "prod",
              status={"interfaces": [{"name": "booting"}, "not an interface", {"name": "default", "mac": MAC_B}]})
    assert rules.identity_values(vmi)[0] == {MAC_B}


def test_taken_values_count_list_and_free_only_what_the_restore_added():
    taken = rules.TakenValues(frozenset({"a"}), ["a", "b"])
    assert len(taken) == 2 and sorted(taken) == ["a", "b"]  # "a" is the snapshot's: counted once
    taken.discard("b")
    assert "b" not in taken and sorted(taken) == ["a"]
    with pytest.raises(ValueError, match="in use outside this restore"):
        taken.discard("a")


def test_reserving_an_object_takes_its_macs_serial_and_uuid():
    in_use = IdentitiesInUse()
    in_use.reserve(vm())
    assert (in_use.macs, in_use.serials, in_use.uuids) == ({MAC_A, MAC_B}, {"s-1"}, {FOREIGN_UUID})


def test_standalone_vmis_of_one_restore_never_share_a_mac():
    ctx = RestoreContext()
    vmis = [obj("kubevirt.io/v1", "VirtualMachineInstance", name, "prod", spec={"domain": {"devices": {
        "interfaces": [{"name": "nic0", "macAddress": MAC_A}]}}}) for name in ("one", "two")]
    first, second = (rules.restore_object(v, ctx) for v in vmis)
    assert first.object["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == MAC_A
    assert second.object["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == stable_mac(
        "prod", "two", "nic0", 0)
    assert [c.path for c in second.changes] == ["spec.domain.devices.interfaces[0].macAddress"]


def test_a_standalone_vmi_gets_the_same_rules_at_spec_paths():
    vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "solo", "prod", spec={"domain": {
        "devices": {"interfaces": [{"name": "nic0", "macAddress": MAC_A}]}, "firmware": {"serial": "s-1"}}})
    result, changes = apply(vmi, IdentitiesInUse(macs={MAC_A}, serials={"s-1"}))
    assert {c.path for c in changes} == {"spec.domain.devices.interfaces[0].macAddress", "spec.domain.firmware.serial"}
    assert result["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == stable_mac("prod", "solo", "nic0", 0)


# --- firmware ---

def test_kubevirts_name_derived_uuid_is_a_sha1_uuid_in_its_namespace():
    """uuid.NewSHA1(namespace, name) in Go: SHA-1 of the namespace's bytes and the name, version 5, RFC 4122."""
    digest = bytearray(hashlib.sha1(uuid.UUID("6a1a24a1-4061-4607-8bf4-a3963d0c5895").bytes + b"db").digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    assert rules.name_derived_firmware_uuid("db") == str(uuid.UUID(bytes=bytes(digest)))


def test_a_uuid_derived_from_the_objects_own_name_is_never_a_collision():
    derived = rules.name_derived_firmware_uuid("db")
    result, changes = apply(vm(namespace="dr", firmware_uuid=derived.upper()), IdentitiesInUse(uuids={derived}))
    assert domain(result)["firmware"]["uuid"] == derived.upper() and not changes


def test_any_other_uuid_in_use_is_regenerated_stably():
    other_name = rules.name_derived_firmware_uuid("web")
    for explicit in (FOREIGN_UUID, other_name):
        result, changes = apply(vm(firmware_uuid=explicit), IdentitiesInUse(uuids={explicit}))
        new = domain(result)["firmware"]["uuid"]
        assert new == stable_firmware_value("prod", "db", "uuid", 0) != explicit
        assert [(c.path, c.old, c.new) for c in changes] == [
            ("spec.template.spec.domain.firmware.uuid", explicit, new)]
    untouched, changes = apply(vm(), IdentitiesInUse())
    assert domain(untouched)["firmware"]["uuid"] == FOREIGN_UUID and not changes


def test_serial_is_regenerated_on_collision_or_always_by_policy():
    result, changes = apply(vm(), IdentitiesInUse(serials={"s-1"}))
    assert domain(result)["firmware"]["serial"] == stable_firmware_value("prod", "db", "serial", 0)
    assert [c.path for c in changes] == ["spec.template.spec.domain.firmware.serial"]
    assert domain(apply(vm(), IdentitiesInUse(serials={"s-2"}))[0])["firmware"]["serial"] == "s-1"
    regenerated, changes = apply(vm(), firmware=FirmwarePolicy.REGENERATE)
    assert domain(regenerated)["firmware"]["serial"] != "s-1"
    assert domain(regenerated)["firmware"]["uuid"] != FOREIGN_UUID
    assert {c.reason for c in changes if "firmware" in c.path} == {"firmware policy regenerate"}
    kept, _ = apply(vm(), IdentitiesInUse(serials={"s-1"}, uuids={FOREIGN_UUID}), firmware=FirmwarePolicy.KEEP)
    assert domain(kept)["firmware"] == {"serial": "s-1", "uuid": FOREIGN_UUID}


# --- one restore ---

def test_two_objects_of_one_restore_never_collide_with_each_other():
    ctx = RestoreContext()
    first = rules.restore_object(vm("a"), ctx)
    second = rules.restore_object(vm("b"), ctx)
    assert macs_of(first.object) == [MAC_A, MAC_B] and not first.changes
    assert set(macs_of(second.object)).isdisjoint({MAC_A, MAC_B})
    assert domain(second.object)["firmware"]["serial"] != "s-1"
    assert {MAC_A, MAC_B, *macs_of(second.object)} <= ctx.identities_in_use.macs


def test_restore_object_uses_the_contexts_policies():
    result = rules.restore_object(vm(), RestoreContext(identity=IdentityPolicies(MacPolicy.CLEAR)))
    assert macs_of(result.object) == [None, None]
    assert [c.rule for c in result.changes] == ["identity", "identity"]


# --- when the cluster's values are needed ---

@pytest.mark.parametrize("mac,firmware,needed", [
    (MacPolicy.REGENERATE_ON_COLLISION, FirmwarePolicy.KEEP, True),
    (MacPolicy.KEEP, FirmwarePolicy.REGENERATE_ON_COLLISION, True),
    (MacPolicy.REGENERATE, FirmwarePolicy.REGENERATE, False),
    (MacPolicy.CLEAR, FirmwarePolicy.KEEP, False),
])
def test_only_collision_policies_need_the_clusters_identities(mac, firmware, needed):
    assert IdentityPolicies(mac, firmware).needs_cluster_identities is needed


def test_an_object_needs_the_clusters_identities_only_for_a_value_a_collision_policy_governs():
    default = IdentityPolicies()
    assert rules.needs_identities_in_use(vm(), default)
    assert not rules.needs_identities_in_use(vm(macs=(), serial=None,
                                                firmware_uuid=rules.name_derived_firmware_uuid("db")), default)
    assert not rules.needs_identities_in_use(vm(serial=None, firmware_uuid=None),
                                             IdentityPolicies(MacPolicy.KEEP, FirmwarePolicy.REGENERATE_ON_COLLISION))
    assert not rules.needs_identities_in_use(obj("v1", "ConfigMap", "c"), default)


def test_a_serial_alone_needs_the_clusters_serials():
    assert rules.needs_identities_in_use(vm(macs=(), firmware_uuid=None), IdentityPolicies()) is True


def test_firmware_policy_regenerate_replaces_what_is_set_and_adds_nothing():
    result, changes = apply(vm(macs=(), firmware_uuid=None), IdentitiesInUse(), MacPolicy.KEEP,
                            FirmwarePolicy.REGENERATE)
    assert domain(result)["firmware"] == {"serial": stable_firmware_value("prod", "db", "serial", 0)}
    assert str(uuid.UUID(domain(result)["firmware"]["serial"])) == domain(result)["firmware"]["serial"]
    assert [c.path for c in changes] == ["spec.template.spec.domain.firmware.serial"]


def test_policy_names_are_checked():
    assert IdentityPolicies.parse("clear", "keep") == IdentityPolicies(MacPolicy.CLEAR, FirmwarePolicy.KEEP)
    with pytest.raises(ValueError, match="unknown MAC policy 'clear-on-collision': use one of keep, "):
        IdentityPolicies.parse("clear-on-collision", "keep")
    with pytest.raises(ValueError, match="unknown firmware policy 'clear'"):
        IdentityPolicies.parse("keep", "clear")


# --- the webhook ---

def test_webhook_replaces_a_colliding_mac_and_warns_with_old_and_new():
    lookups = StaticLookups({"identities": [["02:00:00:aa:bb:01"], [], []]})
    response = post(create_app({"LOOKUPS": lookups}).test_client(),
                    load("vm-mac-collision")["review"]).get_json()["response"]
    new = stable_mac("prod", "db", "default", 0)
    assert decoded_patch(response) == [{"op": "replace", "path": f"/{IFACES.replace('.', '/')}/0/macAddress",
                                        "value": new}]
    assert f"kvbackup: changed {IFACES}[0].macAddress: 02:00:00:AA:BB:01 -> {new} (already in use in the " \
           "cluster or this restore)" in response["warnings"]


def test_webhook_answers_the_same_review_alike_with_cached_lookups():
    """What one review reserves stays with that review: lookups that cache the values in use (as the cluster's
    do) must not see the first answer's new MAC as taken by the second."""
    client = create_app({"LOOKUPS": StaticLookups({"identities": [["02:00:00:aa:bb:01"], [], []]})}).test_client()
    review = load("vm-mac-collision")["review"]
    first, second = (decoded_patch(post(client, review).get_json()["response"]) for _ in range(2))
    assert first == second != []


def test_webhook_lists_identities_only_when_a_collision_policy_needs_them(monkeypatch):
    review = load("vm-mac-collision")["review"]
    default = StaticLookups({"identities": [["02:00:00:aa:bb:01"], [], []]})
    post(create_app({"LOOKUPS": default}).test_client(), review)
    assert "identities" in default.calls
    monkeypatch.setenv("KVBACKUP_WEBHOOK_MAC_POLICY", "regenerate")
    monkeypatch.setenv("KVBACKUP_WEBHOOK_FIRMWARE_POLICY", "keep")
    regenerate = StaticLookups({"identities": [["02:00:00:aa:bb:01"], [], []]})
    response = post(create_app({"LOOKUPS": regenerate}).test_client(), review).get_json()["response"]
    assert "identities" not in regenerate.calls
    assert {op["path"] for op in decoded_patch(response)} == {
        f"/{IFACES.replace('.', '/')}/{i}/macAddress" for i in (0, 1)}
    only_derived = load("vm-mac-collision")["review"]
    template = only_derived["request"]["object"]["spec"]["template"]["spec"]["domain"]
    template["devices"]["interfaces"] = []
    template["firmware"] = {"uuid": rules.name_derived_firmware_uuid("db")}
    untouched = StaticLookups()
    post(create_app({"LOOKUPS": untouched}).test_client(), only_derived)
    assert "identities" not in untouched.calls


def test_webhook_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match="unknown MAC policy 'random'"):
        create_app({"LOOKUPS": StaticLookups(), "MAC_POLICY": "random"})
    with pytest.raises(ValueError, match="unknown firmware policy 'clear'"):
        create_app({"LOOKUPS": StaticLookups(), "FIRMWARE_POLICY": "clear"})


# --- install settings ---

def vm_rule(objects: list[dict]) -> dict:
    role = by_kind(objects)["ClusterRole"]
    return next(r for r in role["rules"] if "virtualmachines" in r["resources"])


def env(objects: list[dict]) -> dict[str, str]:
    container = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_render_sets_the_policies_and_lists_vms_only_for_a_collision_policy():
    code, out = run("webhook", "render", "--without-tls", "--mac-policy", "regenerate", "--firmware-policy", "keep")
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    assert env(objects)["KVBACKUP_WEBHOOK_MAC_POLICY"] == "regenerate"
    assert env(objects)["KVBACKUP_WEBHOOK_FIRMWARE_POLICY"] == "keep"
    assert vm_rule(objects)["verbs"] == ["get"]
    default = manifests.render(manifests.Settings())
    assert env(default)["KVBACKUP_WEBHOOK_MAC_POLICY"] == env(default)["KVBACKUP_WEBHOOK_FIRMWARE_POLICY"] == \
        "regenerate-on-collision"
    assert vm_rule(default)["verbs"] == ["get", "list", "watch"]
    firmware_only = manifests.render(manifests.Settings(identity=IdentityPolicies(
        MacPolicy.CLEAR, FirmwarePolicy.REGENERATE_ON_COLLISION)))
    assert vm_rule(firmware_only)["verbs"] == ["get", "list", "watch"]


def test_render_refuses_an_unknown_policy(capsys):
    with pytest.raises(SystemExit) as exit_:
        run("webhook", "render", "--mac-policy", "clear-on-collision")
    assert exit_.value.code == 2 and "--mac-policy" in capsys.readouterr().err


def test_install_puts_the_policies_into_the_clusters_deployment(fake_api, kubeconfig):
    with RolloutController(fake_api):
        code, out = run("webhook", "install", "--kubeconfig", kubeconfig, "--mac-policy", "keep",
                        "--firmware-policy", "regenerate")
    assert code == 0, out
    deployment = fake_api.get_object("apps", "Deployment", "kvbackup-system", "kvbackup-webhook")
    assert env([deployment])["KVBACKUP_WEBHOOK_MAC_POLICY"] == "keep"
    assert env([deployment])["KVBACKUP_WEBHOOK_FIRMWARE_POLICY"] == "regenerate"
    role = fake_api.get_object("rbac.authorization.k8s.io", "ClusterRole", "",
                               manifests.cluster_role_name("kvbackup-system"))
    assert vm_rule([role])["verbs"] == ["get"]


def test_the_command_line_offers_exactly_the_rules_policies():
    from kubectl_kvbackup.cli.common import FIRMWARE_POLICIES, MAC_POLICIES
    assert MAC_POLICIES == tuple(p.value for p in MacPolicy)
    assert FIRMWARE_POLICIES == tuple(p.value for p in FirmwarePolicy)
