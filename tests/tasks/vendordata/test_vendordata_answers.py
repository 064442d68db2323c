"""The service's answers for the cases a VM's first boot can meet, called in-process.

Same configuration as the service process (tests/servers/vendordata.py), same
Samba DC; the answer object is what the web layer would send.
"""

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from novahooks.settings import Settings, load_settings
from tests.servers.samba import SambaServer
from tests.helpers import until
from tests.servers.vendordata import write_config
from tests.tasks.backends.test_directory_ad import show
from tests.tasks.vendordata.test_vendordata_service import bind_as_machine, body
from tasks.errors import Misconfigured
from tasks.vendordata.service import Vendordata


_opened: List[Vendordata] = []


def _forget_process_settings() -> None:
    from tasks import config, drivers
    config.settings.cache_clear()
    for name in ("configured", "dns", "directory", "ipam", "inventory", "audit"):
        cached = getattr(drivers, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


@pytest.fixture(autouse=True)
def process_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shared validation (tasks/preflight.py) reaches DNS through the process's
    settings, which the service process points at its own file (web.serve): each test
    here does the same (settings_for), and the session's come back after it."""
    monkeypatch.setenv("NOVAHOOKS_CONFIG", os.environ.get("NOVAHOOKS_CONFIG", ""))
    yield
    while _opened:
        _opened.pop().close()
    monkeypatch.undo()
    _forget_process_settings()


def settings_for(tmp_path: Path, samba: SambaServer,
                 **overrides: Dict[str, Any]) -> Settings:
    paths = write_config(tmp_path, samba, 9, overrides)
    os.environ["NOVAHOOKS_CONFIG"] = str(paths["config"])
    _forget_process_settings()
    return load_settings(str(paths["config"]))


def opened(settings: Settings) -> Vendordata:
    """The service in this process, closed after the test (it has threads of its own)."""
    service = Vendordata(settings)
    _opened.append(service)
    return service


def answer(service: Vendordata, request: Dict[str, Any]) -> Dict[str, Any]:
    reply = service.answer(json.dumps(request).encode())
    assert reply.status == 200
    return reply.body


def settled(service: Vendordata, request: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The answer, or None while it is an error (over_budget: the work goes on)."""
    reply = answer(service, request)
    return None if "error" in reply else reply


def test_plain_directory_entries_get_names_and_no_secret(tmp_path: Path,
                                                         samba: SambaServer) -> None:
    service = opened(settings_for(tmp_path, samba, directory={"linux": "host"}))
    host = "host-" + uuid.uuid4().hex[:8]
    reply = answer(service, body(host, "linux"))
    assert "join" not in reply
    assert reply["fqdn"] == "%s.%s" % (host, samba.zone)
    assert reply["registered"]["directory"]["dn"].lower().startswith("cn=%s," % host)
    assert show(samba, host.upper()) is None  # a device entry, not a computer object


def test_a_directory_that_is_down_gets_a_retryable_error_and_nothing_stored(
        tmp_path: Path, samba: SambaServer) -> None:
    service = opened(settings_for(tmp_path, samba,
                                      directory={"url": "ldap://127.0.0.1:9"}))
    request = body("down-" + uuid.uuid4().hex[:8], "windows")
    started = time.monotonic()
    reply = answer(service, request)
    assert time.monotonic() - started < 4.5  # within the budget, below Nova's 5 s
    assert reply["error"]["code"] == "backend_unavailable" and reply["error"]["retry"]
    assert "join" not in reply
    assert service.store.raw(request["instance-id"]) is None


def test_an_expired_credential_is_not_issued_again(tmp_path: Path,
                                                   samba: SambaServer) -> None:
    service = opened(settings_for(tmp_path, samba,
                                      vendordata={"credential_ttl": "1"}))
    request = body("ttl-" + uuid.uuid4().hex[:6], "windows")
    password = answer(service, request)["join"]["machine_password"]
    time.sleep(1.2)
    later = answer(service, request)["join"]
    assert later["expired"] is True and "machine_password" not in later
    assert service.store.raw(request["instance-id"])["token"] is None
    # The account keeps the password the guest was given (it may have joined with it).
    assert bind_as_machine(samba, request["hostname"].upper(), password).bound


def test_a_key_file_that_does_not_decrypt_the_store_is_an_error_not_a_new_password(
        tmp_path: Path, samba: SambaServer) -> None:
    settings = settings_for(tmp_path, samba)
    request = body("key-" + uuid.uuid4().hex[:6], "windows")
    answer(opened(settings), request)
    other = tmp_path / "other.key"
    from tasks.vendordata.credentials import generate_key
    other.write_text(generate_key())
    rotated = load_settings(str(settings.source), environ={
        "NOVAHOOKS_VENDORDATA_SECRET_KEY_FILE": str(other)})
    reply = answer(opened(rotated), request)
    assert reply["error"]["code"] == "refused" and "decrypt" in reply["error"]["message"]


@pytest.mark.parametrize("content", [None, "", "not a key"])
def test_a_missing_or_bad_key_file_stops_the_service(tmp_path: Path, samba: SambaServer,
                                                     content: Any) -> None:
    key = tmp_path / "bad.key"
    if content is not None:
        key.write_text(content)
    settings = settings_for(tmp_path / "conf", samba,
                            vendordata={"secret_key_file": str(key)})
    with pytest.raises(Misconfigured, match="secret_key_file"):
        Vendordata(settings)


def test_an_answer_leaves_at_the_budget_and_the_work_goes_on(tmp_path: Path,
                                                             samba: SambaServer) -> None:
    service = opened(settings_for(tmp_path, samba, vendordata={"budget": "0.05"}))
    request = body("bud-" + uuid.uuid4().hex[:6], "windows")
    started = time.monotonic()
    first = answer(service, request)
    assert time.monotonic() - started < 0.5
    assert first["error"]["code"] == "over_budget" and first["error"]["retry"] is True
    assert "join" not in first
    # Nova asks again after its 15 s cache; here: until the work has landed.
    later = until(lambda: answer(service, request).get("join"), 30, "the credential")
    assert bind_as_machine(samba, request["hostname"].upper(), later["machine_password"]).bound
    records = [json.loads(line) for line in
               Path(service.settings.audit.path).read_text().splitlines()
               if request["instance-id"] in line]
    assert records[0]["stage"] == "failed" and "OverBudget" in records[0]["error"]
    assert [r["credential"] for r in records].count("issued") == 1


def test_the_planned_inventory_record_is_made_before_boot(tmp_path: Path, samba: SambaServer,
                                                          stack: Any) -> None:
    """The session stack's NetBox as inventory: the VM record exists before the guest
    boots, as the create_instance hook's pre-boot chain made it on Nova 21."""
    import configparser
    from tasks.drivers import load
    stack_config = configparser.ConfigParser(interpolation=None)
    stack_config.read(stack.config_path)
    settings = settings_for(tmp_path, samba, inventory=dict(stack_config["inventory"]),
                            vendordata={"steps": "directory, inventory"})
    request = body("inv-" + uuid.uuid4().hex[:6], "windows")
    service = opened(settings)
    # NetBox may take longer than the budget: then the guest reads again, as here.
    reply = until(lambda: settled(service, request), 60, "an answer with the registration")
    assert sorted(reply["registered"]) == ["directory", "inventory"] and "join" in reply
    held = load("inventory", settings.inventory.driver, settings.inventory).describe(
        request["instance-id"])
    assert held["name"] == request["hostname"] and held["status"] == "planned"
    assert held["interfaces"] == []  # no addresses before boot


def test_a_hostile_name_leaves_slapd_and_bind_as_they_were(tmp_path: Path, samba: SambaServer,
                                                           stack: Any) -> None:
    """The session stack's slapd (driver ldap) and BIND (TSIG): a name DNS would refuse
    gets an error answer, and neither the directory nor the ledger holds anything."""
    import configparser
    from novahooks.event import Address
    from tasks.drivers import load
    stack_config = configparser.ConfigParser(interpolation=None)
    stack_config.read(stack.config_path)
    directory = dict(stack_config["directory"], driver="ldap", tls_server_name=None,
                     dns_domain=None, linux=None)
    settings = settings_for(tmp_path, samba, directory=directory, dns=dict(stack_config["dns"]),
                            vendordata={"steps": "directory"})
    service = opened(settings)
    ldap = load("directory", "ldap", settings.directory)
    dns = load("dns", settings.dns.driver, settings.dns)
    taken = "held-" + uuid.uuid4().hex[:6]
    fqdn = "%s.%s" % (taken, settings.dns.zone)
    owner = str(uuid.uuid4())
    dns.register(fqdn, owner, [Address("10.77.0.9", 4)])  # another VM's name
    try:
        for host, code in (("wpad", "refused_name"), (taken, "conflict")):
            request = body(host, "linux")
            reply = answer(service, request)
            assert reply["error"]["code"] == code and not reply["error"]["retry"], reply
            assert ldap.describe(request["instance-id"]) == {"entries": []}
            assert service.book.made(request["instance-id"]) == {}
        fine = body("fine-" + uuid.uuid4().hex[:6], "linux")  # the control: it is made
        assert answer(service, fine)["registered"]["directory"]["action"] == "added"
        assert len(ldap.describe(fine["instance-id"])["entries"]) == 1
        from tasks.vendordata.request import parse
        ldap.deregister(parse(json.dumps(fine).encode(), settings.vendordata))
    finally:
        dns.deregister(fqdn, owner, [Address("10.77.0.9", 4)])
