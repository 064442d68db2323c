"""Active Directory end to end: Nova's hooks -> outbox -> relay -> workers -> Samba AD.

The session stack's NetBox (IPAM, inventory) with Samba AD as directory (driver
``ad``) and as DNS server (RFC 2136, unsigned updates as Samba's
``allow dns updates = nonsecure`` takes them), under a configuration of this
module's own (Stack.clone) and a Redis database of its own. Assertions ask
Samba itself: ``samba-tool computer show`` and DNS queries.
"""

import uuid
from typing import Iterator

import pytest

from tests.servers.samba import SambaServer
from tests.servers.stack import Stack
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, pipeline, unique_v4
from tests.helpers import audit_lines, hooks_into, until
from tests.tasks.backends.test_directory_ad import show as computer
from tests.tasks.backends.dns_contract import QueryReader

REVERSE = "20.10.in-addr.arpa"


@pytest.fixture(scope="module")
def ad(stack: Stack, samba: SambaServer,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    samba.add_zone(REVERSE)
    workdir = tmp_path_factory.mktemp("ad")
    password = workdir / "ad-password"
    password.write_text(samba.bind_password)
    password.chmod(0o600)
    with pipeline(stack, workdir, 8, **{
        "directory": {"driver": "ad", "url": samba.url, "starttls": "true",
                      "bind_dn": samba.bind_dn, "password_file": str(password),
                      "base_dn": samba.computers_ou, "ca_file": str(samba.ca_file),
                      "tls_server_name": samba.dc_fqdn, "dns_domain": samba.zone},
        "dns": {"server": samba.address, "port": "53", "zone": samba.zone,
                "reverse_zones": REVERSE, "allow_unsigned": "true",
                "tsig_key_name": None, "tsig_secret_file": None},
    }) as clone:
        yield clone


@pytest.fixture
def fire(ad: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with hooks_into(ad.config_path, monkeypatch):
        yield


def done(stack: Stack, vm: Vm, kind: str) -> bool:
    return any(r["kind"] == kind and r["stage"] == "done"
               for r in audit_lines(stack.audit_path, vm.uuid))


@pytest.mark.usefixtures("fire")
def test_windows_vm_gets_a_computer_object_and_samba_dns_records_and_loses_them(
        ad: Stack, samba: SambaServer) -> None:
    name = "win-%s" % uuid.uuid4().hex[:6]
    ip = unique_v4()
    vm = with_uuid(Vm(name, ((ip, mac()),), os_type="windows"))
    fqdn = "%s.%s." % (name, samba.zone)
    create(vm)
    until(lambda: done(ad, vm, "build"), 180, "build chain of %s" % name)
    shown = computer(samba, name.upper())
    assert shown is not None, "samba-tool computer show does not list %s" % name
    assert shown["sAMAccountName"] == [name.upper() + "$"]
    assert shown["dNSHostName"] == [fqdn.rstrip(".").lower()]
    assert sorted(shown["servicePrincipalName"]) == sorted(
        ["HOST/%s" % name.upper(), "HOST/%s" % fqdn.rstrip(".").lower()])
    assert vm.uuid in shown["description"][0]
    dns_ = QueryReader(samba.address, 53, samba.zone)
    assert dns_.ask(fqdn, "A") == [ip]
    assert dns_.ptr(ip) == [fqdn.rstrip(".").lower()]

    delete(vm)
    until(lambda: done(ad, vm, "delete"), 180, "delete chain of %s" % name)
    assert computer(samba, name.upper()) is None
    assert dns_.ask(fqdn, "A") == []
    assert dns_.ptr(ip) == []


@pytest.mark.usefixtures("fire")
def test_a_name_ad_refuses_stops_the_chain_before_any_backend_is_written(
        ad: Stack, samba: SambaServer) -> None:
    name = "win-%s-toolong" % uuid.uuid4().hex[:6]
    ip = unique_v4()
    vm = with_uuid(Vm(name, ((ip, mac()),), os_type="windows"))
    create(vm)
    until(lambda: sum(1 for r in audit_lines(ad.audit_path, vm.uuid)
                      if r["stage"] == "failed") >= 2, 120, "both chains refused")
    failed = [r for r in audit_lines(ad.audit_path, vm.uuid) if r["stage"] == "failed"]
    assert {r["step"] for r in failed} <= {"ipam.reserve", "ldap.register"}
    assert all("at most 15" in r["error"] for r in failed), failed
    assert QueryReader(samba.address, 53, samba.zone).ask("%s.%s." % (name, samba.zone), "A") == []
    assert computer(samba, name.upper()) is None
    from tasks import drivers  # this process's drivers: the session stack's NetBox
    assert drivers.ipam().describe(vm.uuid)["addresses"] == []
    assert drivers.inventory().describe(vm.uuid) == {}
