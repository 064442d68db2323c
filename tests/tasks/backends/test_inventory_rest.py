"""The generic REST inventory driver against a small CMDB process, checked over its API.

It runs the inventory contract; what is the REST driver's own (field_map, PATCH
against PUT, a CMDB ignoring a filter, paging, configuration) stays below.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

from novahooks.event import Address
from tests.servers.base import free_port
from tests.servers.cmdb import CmdbServer, start_cmdb
from novahooks.settings import load_settings
from tasks.backends.inventory.rest import RestInventory
from tasks.errors import Misconfigured, PermanentError
from tests.conftest import mac, make_event, unique_v4
from tests.tasks.backends.inventory_contract import InventoryContract, InventoryReader


@pytest.fixture(scope="module")
def cmdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CmdbServer]:
    with start_cmdb(tmp_path_factory.mktemp("cmdb")) as server:
        yield server


def held(cmdb: CmdbServer, instance_uuid: str) -> List[Dict[str, Any]]:
    """The CMDB's items for this instance, read with plain requests."""
    response = requests.get(cmdb.url + "/api/cis", params={"uuid": instance_uuid}, timeout=5,
                            headers={"Authorization": "Bearer " + cmdb.token})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def driver(cmdb: CmdbServer, workdir: Path, token: str = "", **keys: str) -> RestInventory:
    """Configured as an operator would: the token in a file of its own."""
    secret = workdir / "cmdb.token"
    secret.write_text(token or cmdb.token)
    lines = {"driver": "rest", "url": keys.pop("url", cmdb.url), "token_file": str(secret),
             "results_key": "results", "timeout": "3",
             "field_map": "uuid=uuid, name=hostname, status=status, project=project_id, "
                          "cpus=flavor.vcpus, ram_mb=flavor.memory_mb, ips=addresses, "
                          "macs=macs"}
    lines.update(keys)
    path = workdir / "novahooks.conf"
    path.write_text("[inventory]\n" + "".join("%s = %s\n" % kv for kv in lines.items()))
    return RestInventory(load_settings(str(path), {}).inventory)


class CmdbReader(InventoryReader):
    def __init__(self, cmdb: CmdbServer) -> None:
        self.cmdb = cmdb

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": item["name"], "status": item["status"]}
                for item in held(self.cmdb, instance_uuid)]

    def forget(self, instance_uuid: str) -> None:
        for item in held(self.cmdb, instance_uuid):
            requests.delete("%s/api/cis/%d" % (self.cmdb.url, item["id"]), timeout=5,
                            headers={"Authorization": "Bearer " + self.cmdb.token}
                            ).raise_for_status()


class TestRestInventory(InventoryContract):
    @pytest.fixture
    def inventory(self, cmdb: CmdbServer, tmp_path: Path) -> RestInventory:
        return driver(cmdb, tmp_path)

    @pytest.fixture
    def inventory_decommissioning(self, cmdb: CmdbServer, tmp_path: Path) -> RestInventory:
        return driver(cmdb, tmp_path, on_delete="decommission")

    @pytest.fixture
    def inventory_reader(self, cmdb: CmdbServer) -> CmdbReader:
        return CmdbReader(cmdb)

    @pytest.fixture
    def inventory_bad_credentials(self, cmdb: CmdbServer, tmp_path: Path) -> RestInventory:
        return driver(cmdb, tmp_path, token="0" * 40)

    @pytest.fixture
    def inventory_unreachable(self, cmdb: CmdbServer, tmp_path: Path) -> RestInventory:
        return driver(cmdb, tmp_path, url="http://127.0.0.1:%d" % free_port())


def test_field_map_chooses_what_the_cmdb_receives(cmdb: CmdbServer, tmp_path: Path) -> None:
    inventory = driver(cmdb, tmp_path)
    planned = make_event("create", addresses=None, vm_state="building")
    inventory.register(planned)
    (item,) = held(cmdb, planned.uuid)
    assert item == {"id": item["id"], "uuid": planned.uuid, "name": planned.hostname,
                    "status": "planned", "project": planned.project_id, "cpus": 1,
                    "ram_mb": 2048}, "what the event does not know yet is left out"
    v4, m = unique_v4(), mac()
    built = planned._replace(kind="build", vm_state="active", addresses=[Address(v4, 4, m)])
    assert inventory.register(built)["action"] == "updated"
    assert inventory.register(built)["action"] == "unchanged"
    (item,) = held(cmdb, planned.uuid)
    assert item["ips"] == [v4] and item["macs"] == [m]
    inventory.deregister(built)


def test_patch_and_decommission(cmdb: CmdbServer, tmp_path: Path) -> None:
    inventory = driver(cmdb, tmp_path, update_method="PATCH", on_delete="decommission")
    ev = make_event(addresses=[])
    inventory.register(ev)
    requests.patch("%s/api/cis/%d" % (cmdb.url, held(cmdb, ev.uuid)[0]["id"]),
                   json={"owner": "team-a"}, headers={"Authorization": "Bearer " + cmdb.token},
                   timeout=5).raise_for_status()
    inventory.register(ev._replace(hostname=ev.hostname + "-renamed"))
    assert inventory.deregister(ev)["action"] == "decommissioned"
    (item,) = held(cmdb, ev.uuid)
    assert item["status"] == "decommissioned" and item["name"] == ev.hostname + "-renamed"
    assert item["owner"] == "team-a", "PATCH keeps what other tools put in the record"


def test_item_of_another_uuid_is_never_taken_for_ours(cmdb: CmdbServer, tmp_path: Path) -> None:
    other = make_event(addresses=[])
    driver(cmdb, tmp_path).register(other)
    ignoring = driver(cmdb, tmp_path, find_url="/api/cis?nosuchfilter={uuid}")
    ev = make_event(addresses=[])
    assert ignoring.describe(ev.uuid) == {}
    ignoring.register(ev)
    assert [i["name"] for i in held(cmdb, other.uuid)] == [other.hostname]
    assert [i["name"] for i in held(cmdb, ev.uuid)] == [ev.hostname]


def test_answer_without_the_list_names_results_key(cmdb: CmdbServer, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="results_key"):
        driver(cmdb, tmp_path, results_key="").check()
    assert "token accepted" in driver(cmdb, tmp_path).check()


@pytest.mark.parametrize("key, value, problem", [
    ("field_map", "name=hostname", "uuid"),
    ("field_map", "uuid=uuid, cpu=flavor.cpus", "flavor.cpus"),
    ("find_url", "/api/cis?uuid={instance}", "find_url"),
    ("update_url", "/api/cis/", "{id}"),
    ("update_method", "POST", "PUT or PATCH"),
    ("on_delete", "decommission", "status"),
])
def test_bad_configuration_is_named(cmdb: CmdbServer, tmp_path: Path, key: str, value: str,
                                    problem: str) -> None:
    keys = {key: value}
    if key == "on_delete":
        keys["field_map"] = "uuid=uuid, name=hostname"
    with pytest.raises(Misconfigured, match=problem.replace("{", r"\{").replace("}", r"\}")):
        driver(cmdb, tmp_path, **keys)


@pytest.mark.parametrize("next_key", ["next", ""], ids=["next-field", "link-header"])
def test_managed_follows_every_page(tmp_path: Path, next_key: str) -> None:
    """reconcile's list of what the CMDB holds must not stop at its first page."""
    with start_cmdb(tmp_path / "paged", page_size=3) as paged:
        inventory = driver(paged, tmp_path, next_key=next_key)
        events = [make_event(addresses=[]) for _ in range(8)]
        for ev in events:
            inventory.register(ev)
        first = requests.get(paged.url + "/api/cis", timeout=5,
                             headers={"Authorization": "Bearer " + paged.token}).json()
        assert len(first["results"]) == 3 and first["count"] == 8, first
        assert sorted(inventory.managed()) == sorted(ev.uuid for ev in events)


def test_a_next_page_on_another_host_is_not_followed(tmp_path: Path) -> None:
    """The token goes with every request: a page link elsewhere is refused, not fetched."""
    with start_cmdb(tmp_path / "proxied", page_size=2,
                    public_url="http://cmdb.example.com:8080") as proxied:
        inventory = driver(proxied, tmp_path)
        for _ in range(3):
            inventory.register(make_event(addresses=[]))
        with pytest.raises(PermanentError, match="next page at http://cmdb.example.com:8080"
                                                 "/api/cis, outside http://127.0.0.1"):
            inventory.managed()
