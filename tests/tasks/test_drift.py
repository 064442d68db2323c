"""``novahooks reconcile --nova``: drift between a Compute API and the real backends."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import time

import pynetbox

from tests.demo import gone, holdings, registered
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, with_uuid
from novahooks.event import Address
from tests.conftest import mac, make_event, unique_v4
from tests.fixtures.compute_api import ComputeApi, server_body
from tests.helpers import until


pytestmark = pytest.mark.usefixtures("hook_outbox")


@pytest.fixture
def api() -> Iterator[ComputeApi]:
    """A Compute API stand-in for one test; its ``servers`` are what Nova lists."""
    running = ComputeApi()
    try:
        yield running
    finally:
        running.stop()


def reconcile(stack: Stack, clouds: Path, *extra: str,
              prune_after: float = 0) -> subprocess.CompletedProcess:
    env = stack.env()
    env.update({"OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "standin",
                "NOVAHOOKS_RECONCILE_PRUNE_AFTER": "%d" % prune_after})
    return subprocess.run([sys.executable, "-m", "novahooks.cli", "reconcile", "--nova",
                           "--json"] + list(extra), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=180)


def ours(result: subprocess.CompletedProcess, uuids: List[str]) -> Dict[str, Any]:
    rows = json.loads(result.stdout)
    found = {}  # type: Dict[str, Any]
    for row in rows:
        if row["instance_uuid"] in uuids:
            found.setdefault(row["instance_uuid"], set()).add((row["backend"], row["problem"]))
    return found


def test_drift_is_reported_then_repaired(stack: Stack, processes: Processes, tmp_path: Path,
                                         api: ComputeApi) -> None:
    fine, missing, stale, moved = (with_uuid(Vm("drift-%s" % n, ((unique_v4(), mac()),)))
                                   for n in ("fine", "missing", "stale", "moved"))
    for vm in (fine, stale, moved):
        create(vm)
    for vm in (fine, stale, moved):
        until(lambda vm=vm: registered(vm, holdings(vm)), 120, vm.hostname)
    new_address = (unique_v4(), moved.addresses[0][1])
    moved_now = moved._replace(addresses=(new_address,))
    api.servers = [server_body(fine.uuid, fine.hostname, fine.addresses),
                   server_body(missing.uuid, missing.hostname, missing.addresses),
                   server_body(moved.uuid, moved.hostname, moved_now.addresses)]
    clouds = api.clouds_yaml(tmp_path / "clouds.yaml")
    uuids = [fine.uuid, missing.uuid, stale.uuid, moved.uuid]
    report = reconcile(stack, clouds)
    assert report.returncode == 1, report.stderr
    drift = ours(report, uuids)
    assert fine.uuid not in drift
    assert drift[missing.uuid] == {("ipam", "missing"), ("ldap", "missing"),
                                   ("inventory", "missing"), ("dns", "missing")}
    assert drift[stale.uuid] == {("ipam", "stale"), ("ldap", "stale"),
                                 ("inventory", "stale")}
    assert drift[moved.uuid] == {("ipam", "mismatched"), ("ldap", "mismatched"),
                                 ("dns", "mismatched"), ("inventory", "mismatched")}
    fixed = reconcile(stack, clouds, "--fix")
    assert fixed.returncode == 0, fixed.stderr
    until(lambda: registered(missing, holdings(missing)), 120, "missing VM registered")
    until(lambda: gone(stale, holdings(stale)), 120, "stale VM removed")
    until(lambda: registered(moved_now, holdings(moved_now)), 120, "moved VM updated")
    assert ours(reconcile(stack, clouds), uuids) == {}


def test_unreachable_compute_api_or_backend_fails_clearly_and_changes_nothing(
        stack: Stack, tmp_path: Path, api: ComputeApi) -> None:
    down = ComputeApi()
    clouds = down.clouds_yaml(tmp_path / "clouds.yaml")
    down.stop()
    result = reconcile(stack, clouds, "--fix")
    assert result.returncode == 1
    assert "Compute API" in result.stderr and "unreachable" in result.stderr, result.stderr
    clouds = api.clouds_yaml(tmp_path / "clouds2.yaml")
    env_token = {"NOVAHOOKS_INVENTORY_TOKEN": "0" * 40}
    env = stack.env()
    env.update(env_token)
    env.update({"OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "standin"})
    result = subprocess.run([sys.executable, "-m", "novahooks.cli", "reconcile", "--nova",
                             "--fix"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=180)
    assert result.returncode == 1
    assert "inventory" in result.stderr and "refused the token" in result.stderr
    assert "published" not in result.stderr


def test_a_vm_that_policy_leaves_out_is_not_reported_missing(stack: Stack, tmp_path: Path,
                                                              api: ComputeApi) -> None:
    left_out, kept = (with_uuid(Vm("drift-%s" % n, ((unique_v4(), mac()),)))
                      for n in ("left-out", "kept"))
    body = server_body(left_out.uuid, left_out.hostname, left_out.addresses)
    body["metadata"] = {"novahooks:register": "false"}
    api.servers = [body, server_body(kept.uuid, kept.hostname, kept.addresses)]
    report = reconcile(stack, api.clouds_yaml(tmp_path / "clouds.yaml"))
    drift = ours(report, [left_out.uuid, kept.uuid])
    assert left_out.uuid not in drift, drift
    assert drift[kept.uuid] == {("ipam", "missing"), ("ldap", "missing"),
                                ("inventory", "missing"), ("dns", "missing")}


def _left_alone(result: subprocess.CompletedProcess, uuid: str) -> str:
    lines = [line for line in result.stderr.splitlines() if uuid in line and "left alone" in line]
    assert lines, result.stderr
    return lines[0]


def test_a_vm_created_between_the_two_listings_is_not_removed(
        stack: Stack, processes: Processes, tmp_path: Path, api: ComputeApi) -> None:
    """Today's race: Nova is listed, a VM is built, the backends are listed: it looks stale.

    Both guards are shown: a VM built through the pipeline (the ledger saw its chain
    after the listing began), and one whose records appeared behind the ledger's back
    (Nova, asked by id right before the removal, has it). prune_after = 0, so neither
    the grace period nor an earlier pass protects them.
    """
    piped, direct = (with_uuid(Vm("drift-late-%s" % n, ((unique_v4(), mac()),)))
                     for n in ("piped", "direct"))

    def built_meanwhile() -> None:
        create(piped)
        until(lambda: registered(piped, holdings(piped)), 120, piped.hostname)
        from tasks import drivers
        address = direct.addresses[0][0]
        event = make_event(hostname=direct.hostname, addresses=[
            Address(address, 4, direct.addresses[0][1], "private")])._replace(
            uuid=direct.uuid)
        drivers.ipam().ensure(direct.uuid, direct.hostname + ".cloud.example.test",
                              event.addresses)
        drivers.inventory().register(event)
        api.servers.extend([server_body(vm.uuid, vm.hostname, vm.addresses)
                            for vm in (piped, direct)])
        api.after_listing = None

    api.after_listing = built_meanwhile
    clouds = api.clouds_yaml(tmp_path / "clouds.yaml")
    fixed = reconcile(stack, clouds, "--fix")
    assert fixed.returncode == 0, fixed.stderr
    assert ours(fixed, [piped.uuid])[piped.uuid] == {
        ("ipam", "stale"), ("ldap", "stale"), ("inventory", "stale")}
    assert "after the listing began" in _left_alone(fixed, piped.uuid)
    assert "Nova has it when asked by id" in _left_alone(fixed, direct.uuid)
    assert direct.uuid in api.asked
    time.sleep(5)  # a delete chain, had one gone out, runs in well under this
    assert registered(piped, holdings(piped))
    assert holdings(direct)["inventory"].get("status") == "active"
    assert ours(reconcile(stack, clouds), [piped.uuid]) == {}


def test_a_vm_deleted_between_the_two_listings_is_not_registered_again(
        stack: Stack, processes: Processes, tmp_path: Path, api: ComputeApi) -> None:
    deleted, building = (with_uuid(Vm("drift-%s" % n, ((unique_v4(), mac()),)))
                         for n in ("deleted", "building"))
    api.servers = [server_body(deleted.uuid, deleted.hostname, deleted.addresses),
                   server_body(building.uuid, building.hostname, building.addresses,
                               status="BUILD", vm_state="building")]

    def deleted_meanwhile() -> None:
        api.servers = [s for s in api.servers if s["id"] != deleted.uuid]

    api.after_listing = deleted_meanwhile
    fixed = reconcile(stack, api.clouds_yaml(tmp_path / "clouds.yaml"), "--fix",
                      prune_after=3600)
    assert fixed.returncode == 0, fixed.stderr
    rows = ours(fixed, [deleted.uuid, building.uuid])
    assert building.uuid not in rows, "a VM in BUILD is registered by its own chain"
    assert ("inventory", "missing") in rows[deleted.uuid]
    assert "deleted since the listing" in _left_alone(fixed, deleted.uuid)
    time.sleep(5)  # a build chain, had one gone out, registers in well under this
    assert gone(deleted, holdings(deleted))


def test_a_stale_record_is_removed_only_after_prune_after_across_passes(
        stack: Stack, processes: Processes, tmp_path: Path, api: ComputeApi) -> None:
    stale = with_uuid(Vm("drift-pruned", ((unique_v4(), mac()),)))
    create(stale)
    until(lambda: registered(stale, holdings(stale)), 120, stale.hostname)
    clouds = api.clouds_yaml(tmp_path / "clouds.yaml")
    first = reconcile(stack, clouds, "--fix", prune_after=4)
    assert "prune_after" in _left_alone(first, stale.uuid)
    time.sleep(2)
    assert registered(stale, holdings(stale))
    time.sleep(3)
    second = reconcile(stack, clouds, "--fix", prune_after=4)
    assert not [line for line in second.stderr.splitlines()
                if stale.uuid in line and "left alone" in line], second.stderr
    until(lambda: gone(stale, holdings(stale)), 120, "stale VM removed")


def test_inventory_drift_no_event_revealed_is_reported_and_repaired(
        stack: Stack, processes: Processes, tmp_path: Path, api: ComputeApi) -> None:
    """A rename and a resize Nova sent no event for, a shelve, and an interface deleted
    by hand in NetBox (with it its address went): reconcile sees each and repairs it."""
    vm = with_uuid(Vm("drift-inv", ((unique_v4(), mac()),)))
    create(vm)
    until(lambda: registered(vm, holdings(vm)), 120, vm.hostname)
    netbox = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    held = netbox.virtualization.virtual_machines.get(**{"cf_nova_instance_uuid": vm.uuid})
    for iface in netbox.virtualization.interfaces.filter(virtual_machine_id=held.id):
        iface.delete()
    renamed = vm._replace(hostname="drift-inv-renamed")
    api.servers = [server_body(vm.uuid, renamed.hostname, vm.addresses, vcpus=2,
                               ram=4096, vm_state="shelved_offloaded",
                               status="SHELVED_OFFLOADED")]
    clouds = api.clouds_yaml(tmp_path / "clouds.yaml")
    report = reconcile(stack, clouds, prune_after=3600)
    details = [row["detail"] for row in json.loads(report.stdout)
               if row["instance_uuid"] == vm.uuid and row["backend"] == "inventory"]
    assert any(d.startswith("name drift-inv,") for d in details), details
    assert any(d.startswith("status active") for d in details), details
    assert any(d.startswith("vcpus 1") for d in details), details
    assert any(d.startswith("memory 2048") for d in details), details
    assert any(d.startswith("interfaces {}") for d in details), details
    assert any(d.startswith("primary_ip4 None") for d in details), details
    fixed = reconcile(stack, clouds, "--fix", prune_after=3600)
    assert fixed.returncode == 0, fixed.stderr

    def repaired() -> bool:
        now = netbox.virtualization.virtual_machines.get(held.id)
        return bool(now.name == renamed.hostname and now.status.value == "offline"
                    and now.vcpus == 2 and now.memory == 4096 and now.primary_ip4
                    and str(now.primary_ip4.address).split("/")[0] == vm.addresses[0][0])

    until(repaired, 120, "inventory repaired")
    (iface,) = netbox.virtualization.interfaces.filter(virtual_machine_id=held.id)
    assert str(iface.primary_mac_address.mac_address).lower() == vm.addresses[0][1]
    assert ours(reconcile(stack, clouds), [vm.uuid]) == {}
