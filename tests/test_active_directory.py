"""Active Directory end to end: Nova's hooks -> outbox -> relay -> workers -> Samba AD.

The session stack's NetBox (IPAM, inventory) with Samba AD as directory (driver
``ad``) and as DNS server (RFC 2136, unsigned updates as Samba's
``allow dns updates = nonsecure`` takes them), under a configuration of this
module's own (Stack.clone) and a Redis database of its own. Assertions ask
Samba itself: ``samba-tool computer show`` and DNS queries.
"""

import uuid
from typing import Iterator, Tuple

import pytest

from tests.servers.samba import SambaServer
from tests.servers.stack import Stack
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, pipeline, unique_v4
from tests.helpers import audit_lines, audited, fire_into, until
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


fire = fire_into("ad")


def windows_vm(name: str) -> Tuple[Vm, str]:
    """A Windows VM of this name on a fresh address, and that address."""
    ip = unique_v4()
    return with_uuid(Vm(name, ((ip, mac()),), os_type="windows")), ip


@pytest.mark.usefixtures("fire")
def test_windows_vm_gets_a_computer_object_and_samba_dns_records_and_loses_them(
        ad: Stack, samba: SambaServer) -> None:
    name = "win-%s" % uuid.uuid4().hex[:6]
    vm, ip = windows_vm(name)
    fqdn = "%s.%s." % (name, samba.zone)
    create(vm)
    until(lambda: audited(ad.audit_path, vm.uuid, "build"), 180, "build chain of %s" % name)
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
    until(lambda: audited(ad.audit_path, vm.uuid, "delete"), 180, "delete chain of %s" % name)
    assert computer(samba, name.upper()) is None
    assert dns_.ask(fqdn, "A") == []
    assert dns_.ptr(ip) == []


@pytest.mark.usefixtures("fire")
def test_a_name_ad_refuses_stops_the_chain_before_any_backend_is_written(
        ad: Stack, samba: SambaServer) -> None:
    name = "win-%s-toolong" % uuid.uuid4().hex[:6]
    vm, _ = windows_vm(name)
    create(vm)
    until(lambda: sum(1 for r in audit_lines(ad.audit_path, vm.uuid)
                      if r["stage"] == "failed") >= 2, 120, "both chains refused")
    failed = [r for r in audit_lines(ad.audit_path, vm.uuid) if r["stage"] == "failed"]
    assert {r["step"] for r in failed} <= {"dns.register", "ldap.register"}
    assert all("at most 15" in r["error"] for r in failed), failed
    assert QueryReader(samba.address, 53, samba.zone).ask("%s.%s." % (name, samba.zone), "A") == []
    assert computer(samba, name.upper()) is None
    from tasks import drivers  # this process's drivers: the session stack's NetBox
    assert drivers.ipam().describe(vm.uuid)["addresses"] == []
    assert drivers.inventory().describe(vm.uuid) == {}


# The AD driver's own connections and credentials, against the same DC (no pipeline).

def test_the_ad_driver_keeps_one_connection_per_thread_and_replaces_a_dropped_one(
        samba: SambaServer) -> None:
    import socket
    import threading

    from tasks.backends.directory.ad import AdDirectory
    from tasks.errors import BackendUnavailable
    from tests.tasks.backends.test_directory_ad import ad_settings, name, windows
    driver = AdDirectory(ad_settings(samba))
    event = windows(name())
    dn = driver.register(event)["dn"]
    held = driver._held.conn
    assert held is not None
    held_socket = held.socket
    assert driver.describe(event.uuid)["entries"] == [dn]
    assert driver._held.conn is held  # the same bound connection, no new StartTLS
    elsewhere: list = []
    worker = threading.Thread(target=lambda: elsewhere.append(
        (driver.describe(event.uuid)["entries"], driver._held.conn)))
    worker.start()
    worker.join()
    assert elsewhere[0][0] == [dn] and elsewhere[0][1] is not held  # a thread's own

    held_socket.shutdown(socket.SHUT_RDWR)  # as a DC that restarted or timed it out
    with pytest.raises(BackendUnavailable):  # retryable: the step or the guest asks again
        driver.describe(event.uuid)
    assert driver.describe(event.uuid)["entries"] == [dn]
    assert driver._held.conn is not held
    driver.deregister(event)
    assert computer(samba, event.hostname.upper()) is None


def test_a_linux_host_entry_registers_again_through_the_ad_driver(samba: SambaServer) -> None:
    """linux = host reuses the ldap driver's device entry: a second event updates it
    (the AD driver's own name check once shadowed the ldap driver's)."""
    from novahooks.event import Address
    from tasks.backends.directory.ad import AdDirectory
    from tests.conftest import make_event
    from tests.tasks.backends.test_directory_ad import ad_settings, address, name
    driver = AdDirectory(ad_settings(samba, base_dn=samba.computers_ou, linux="host"))
    linux = make_event(hostname=name().replace("win", "lnx"), os_type="linux",
                       addresses=[Address(address(), 4)])
    first = driver.register(linux)
    again = driver.register(linux._replace(addresses=[Address(address(), 4)]))
    assert again["dn"] == first["dn"] and again["action"] != "added"
    assert [dn.lower() for dn in driver.describe(linux.uuid)["entries"]] == [
        str(first["dn"]).lower()]
    driver.deregister(linux)
    assert driver.describe(linux.uuid)["entries"] == []


def test_a_computer_object_with_a_password_is_not_given_another(samba: SambaServer) -> None:
    """A join credential for an object a machine holds the password of would cut that
    machine off the domain: the second is refused and the first still authenticates."""
    from tasks.backends.directory.ad import AdDirectory
    from tasks.errors import Conflict
    from tests.tasks.backends.test_directory_ad import ad_settings, name, windows
    from tests.tasks.vendordata.test_vendordata_service import bind_as_machine
    driver = AdDirectory(ad_settings(samba))
    event = windows(name())
    driver.register(event)
    driver.set_machine_password(event, "First-0123456789abcdefABCDEF")
    with pytest.raises(Conflict, match="has a password already"):
        driver.set_machine_password(event, "Second-0123456789abcdefABCDEF")
    with pytest.raises(Conflict, match="has a password already"):
        driver.check_unjoined(event)
    assert bind_as_machine(samba, event.hostname.upper(), "First-0123456789abcdefABCDEF").bound
    driver.deregister(event)


def test_a_forked_worker_opens_its_own_connection(samba: SambaServer) -> None:
    """Celery's prefork pool forks after the parent may have used the driver: a child
    sharing the parent's TLS session would garble both."""
    import multiprocessing

    from tasks.backends.directory.ad import AdDirectory
    from tests.tasks.backends.test_directory_ad import ad_settings, name, windows
    driver = AdDirectory(ad_settings(samba))
    event = windows(name())
    dn = driver.register(event)["dn"]
    inherited = driver._held.conn

    def child(out: "multiprocessing.queues.SimpleQueue[object]") -> None:
        entries = driver.describe(event.uuid)["entries"]
        out.put((entries, driver._held.conn is not inherited))

    context = multiprocessing.get_context("fork")
    out = context.SimpleQueue()
    process = context.Process(target=child, args=(out,))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert out.get() == ([dn], True)
    assert driver.describe(event.uuid)["entries"] == [dn]  # the parent's session is intact
    assert driver._held.conn is inherited
    driver.deregister(event)
