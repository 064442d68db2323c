"""``novahooks reconcile --nova``: drift between a Compute API and the real backends."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.demo import gone, holdings, registered
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, with_uuid
from tests.conftest import mac, unique_v4
from tests.fixtures.compute_api import ComputeApi, server_body
from tests.helpers import until


pytestmark = pytest.mark.usefixtures("hook_outbox")


def reconcile(stack: Stack, clouds: Path, *extra: str) -> subprocess.CompletedProcess:
    env = stack.env()
    env.update({"OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "standin"})
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


def test_drift_is_reported_then_repaired(stack: Stack, processes: Processes,
                                         tmp_path: Path) -> None:
    api = ComputeApi()
    try:
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
                                     ("dns", "mismatched")}
        fixed = reconcile(stack, clouds, "--fix")
        assert fixed.returncode == 0, fixed.stderr
        until(lambda: registered(missing, holdings(missing)), 120, "missing VM registered")
        until(lambda: gone(stale, holdings(stale)), 120, "stale VM removed")
        until(lambda: registered(moved_now, holdings(moved_now)), 120, "moved VM updated")
        assert ours(reconcile(stack, clouds), uuids) == {}
    finally:
        api.stop()


def test_unreachable_compute_api_or_backend_fails_clearly_and_changes_nothing(
        stack: Stack, tmp_path: Path) -> None:
    api = ComputeApi()
    clouds = api.clouds_yaml(tmp_path / "clouds.yaml")
    api.stop()
    result = reconcile(stack, clouds, "--fix")
    assert result.returncode == 1
    assert "Compute API" in result.stderr and "unreachable" in result.stderr, result.stderr
    api = ComputeApi()
    try:
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
    finally:
        api.stop()


def test_a_vm_that_policy_leaves_out_is_not_reported_missing(stack: Stack,
                                                              tmp_path: Path) -> None:
    api = ComputeApi()
    try:
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
    finally:
        api.stop()
