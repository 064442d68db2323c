"""The AD driver against a real Samba AD DC, checked with samba-tool on the DC's own database.

Windows VMs' computer objects run the directory contract, read back over LDAPS
as the domain's Administrator; what is Active Directory's own (what a join
needs, NetBIOS names, Linux VMs, TLS, the OU the account may write) stays below.
"""

import itertools
import ssl
import uuid
from typing import Any, Dict, List, Optional

import pytest
from ldap3 import BASE, SUBTREE, Connection, Server, Tls
from ldap3.utils.conv import escape_filter_chars

from novahooks.event import Address
from tests.servers.samba import SambaServer
from novahooks.settings import DirectorySettings, Secret
from tasks.backends.directory.ad import AdDirectory
from tasks.errors import AuthFailed, InvalidEvent, Misconfigured
from tests.conftest import mac, make_event
from tests.servers.base import free_port
from tests.tasks.backends.directory_contract import DirectoryContract, DirectoryReader
from tests.tasks.backends.driver_fixtures import driver_fixtures

_serial = itertools.count(10)


def address() -> str:
    """An address in the Samba fixture's reverse zone (10.0.2.0/24), unique per test."""
    return "10.0.2.%d" % next(_serial)


def name() -> str:
    return "win-" + uuid.uuid4().hex[:8]


def ad_settings(samba: SambaServer, **over: Any) -> DirectorySettings:
    values = {"driver": "ad", "url": samba.url, "starttls": True,
              "bind_dn": samba.bind_dn, "password": Secret(samba.bind_password),
              "base_dn": samba.computers_ou, "ca_file": str(samba.ca_file),
              "tls_server_name": samba.dc_fqdn, "dns_domain": samba.zone, "timeout": 5.0}
    values.update(over)
    return DirectorySettings(values)


def show(samba: SambaServer, computer: str) -> Optional[Dict[str, List[str]]]:
    """What `samba-tool computer show` prints, or None when it finds no such computer."""
    result = samba.samba_tool("computer", "show", computer, check=False)
    if result.returncode != 0:
        assert "Unable to find computer" in result.stdout + result.stderr, result
        return None
    shown = {}  # type: Dict[str, List[str]]
    for line in result.stdout.splitlines():
        if ": " in line:
            key, value = line.split(": ", 1)
            shown.setdefault(key, []).append(value)
    return shown


def windows(hostname: str, addresses: Optional[List[Address]] = None) -> Any:
    return make_event(hostname=hostname, addresses=addresses, os_type="windows")


@pytest.fixture
def driver(samba: SambaServer) -> AdDirectory:
    return AdDirectory(ad_settings(samba))


class SambaReader(DirectoryReader):
    def __init__(self, samba: SambaServer) -> None:
        self.samba = samba

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        conn = admin(self.samba)
        conn.search(self.samba.base_dn, "(description=%s)" % escape_filter_chars(instance_uuid),
                    SUBTREE, attributes=["cn", "ipHostNumber"])
        found = [{"name": str(e.cn.value).lower(),
                  "addresses": sorted(str(a) for a in e.ipHostNumber.values)
                  if "ipHostNumber" in e else []} for e in conn.entries]
        conn.unbind()
        return found

    def plant(self, hostname: str) -> None:
        """Someone else's computer of that name, in another container of the domain."""
        self.samba.samba_tool("computer", "create", hostname.upper())


def windows_event(hostname: Optional[str] = None, **fields: Any) -> Any:
    """A Windows VM's event, its name short enough for NetBIOS even after a rename's
    ``-new``."""
    return make_event(hostname=hostname or "w" + uuid.uuid4().hex[:7], os_type="windows",
                      **fields)


def on_samba(request: Any, **changed: Any) -> AdDirectory:
    return AdDirectory(ad_settings(request.getfixturevalue("samba"), **changed))


class TestAdDirectory(driver_fixtures(
        "directory", on_samba, lambda request: {"password": Secret("not-the-password")},
        lambda request: {"url": "ldap://127.0.0.1:%d" % free_port(), "timeout": 1.0},
        reader=lambda request: SambaReader(request.getfixturevalue("samba"))),
        DirectoryContract):
    @pytest.fixture
    def directory_event(self) -> Any:
        return windows_event


def test_windows_vm_gets_a_computer_object_a_join_accepts(samba: SambaServer,
                                                          driver: AdDirectory) -> None:
    host, v4, nic = name(), address(), mac()
    event = windows(host, [Address(v4, 4, nic)])
    assert driver.register(event)["action"] == "added"
    shown = show(samba, host.upper())
    assert shown is not None
    assert shown["dn"] == ["CN=%s,%s" % (host.upper(), samba.computers_ou)]
    assert shown["sAMAccountName"] == [host.upper() + "$"]
    assert shown["dNSHostName"] == ["%s.%s" % (host, samba.zone)]
    assert sorted(shown["servicePrincipalName"]) == sorted(
        ["HOST/" + host.upper(), "HOST/%s.%s" % (host, samba.zone)])
    assert shown["userAccountControl"] == ["4098"]  # workstation trust, disabled until join
    assert shown["description"] == [event.uuid]
    assert "computer" in shown["objectClass"]
    assert shown["ipHostNumber"] == [v4] and shown["macAddress"] == [nic]
    assert driver.describe(event.uuid)["entries"] == shown["dn"]
    assert driver.managed()[event.uuid] == {"dn": shown["dn"][0], "hostname": host,
                                            "addresses": [v4]}

    # What a domain join does with a pre-staged account: set the machine password and
    # enable it. The account then authenticates.
    secret = "Join-" + uuid.uuid4().hex
    samba.samba_tool("user", "setpassword", host.upper() + "$", "--newpassword=" + secret)
    samba.samba_tool("user", "enable", host.upper() + "$")
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(samba.ca_file),
              valid_names=[samba.dc_fqdn])
    machine = Connection(Server(samba.ldaps_url, use_ssl=True, tls=tls), shown["dn"][0], secret)
    assert machine.bind(), machine.result
    machine.unbind()

    # A later event updates names and addresses but leaves what the join set.
    moved = address()
    assert driver.register(event._replace(addresses=[Address(moved, 4, nic)]))["action"] \
        == "updated"
    again = show(samba, host.upper())
    assert again is not None
    assert again["userAccountControl"] == ["4096"] and again["ipHostNumber"] == [moved]

    assert driver.deregister(event)["removed"] == shown["dn"]
    assert show(samba, host.upper()) is None
    assert driver.deregister(event)["removed"] == []


@pytest.mark.parametrize("hostname, problem", [
    ("win-0123456789ab", "at most 15"),
    ("web_1", "characters Active Directory refuses"),
    ("web.1", "characters Active Directory refuses"),
    ("web 1", "characters Active Directory refuses"),
    ("-web1", "characters Active Directory refuses"),
    ("20250101", "digits only"),
    ("network", "reserves"),
])
def test_bad_names_fail_before_the_server_is_contacted(samba: SambaServer, hostname: str,
                                                        problem: str) -> None:
    # Nothing listens on port 1: any attempt to contact a server would raise
    # BackendUnavailable, not InvalidEvent.
    offline = AdDirectory(ad_settings(samba, url="ldap://127.0.0.1:1"))
    with pytest.raises(InvalidEvent, match=problem) as caught:
        offline.register(windows(hostname))
    assert caught.value.field == "hostname" and hostname in str(caught.value)


def test_linux_vm_host_entry_computer_or_nothing(samba: SambaServer) -> None:
    v4 = address()
    linux = make_event(hostname=name().replace("win", "lnx"), addresses=[Address(v4, 4)],
                       os_type="linux")
    host_driver = AdDirectory(ad_settings(samba))
    dn = host_driver.register(linux)["dn"]
    conn = admin(samba)
    assert conn.search(dn, "(objectClass=*)", BASE, attributes=["objectClass", "ipHostNumber",
                                                                 "description"])
    entry = conn.entries[0]
    assert "device" in entry.objectClass.values and "computer" not in entry.objectClass.values
    assert entry.ipHostNumber.values == [v4] and entry.description.values == [linux.uuid]
    assert show(samba, linux.hostname) is None
    host_driver.deregister(linux)
    assert not conn.search(dn, "(objectClass=*)", BASE)

    assert AdDirectory(ad_settings(samba, linux="skip")).register(linux) == {
        "dn": None, "action": "skipped", "skipped": "not a Windows VM ([directory] linux = skip)"}
    assert not conn.search(samba.computers_ou, "(description=%s)" % linux.uuid, SUBTREE) \
        or not conn.entries

    computer_driver = AdDirectory(ad_settings(samba, linux="computer"))
    computer_driver.register(linux)
    assert show(samba, linux.hostname) is not None
    computer_driver.deregister(linux)
    assert show(samba, linux.hostname) is None
    conn.unbind()


def admin(samba: SambaServer) -> Connection:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(samba.ca_file),
              valid_names=[samba.dc_fqdn])
    conn = Connection(Server(samba.ldaps_url, use_ssl=True, tls=tls),
                      "CN=Administrator,CN=Users," + samba.base_dn, samba.admin_password)
    assert conn.bind(), conn.result
    return conn


def test_ldaps_works_too(samba: SambaServer) -> None:
    over_ldaps = AdDirectory(ad_settings(samba, url=samba.ldaps_url, starttls=False))
    assert "over ldaps" in over_ldaps.check()
    event = windows(name())
    over_ldaps.register(event)
    assert show(samba, event.hostname) is not None
    over_ldaps.deregister(event)


@pytest.mark.parametrize("url_kind", ["starttls", "ldaps"])
def test_untrusted_certificate_is_refused(samba: SambaServer, tmp_path: Any,
                                          url_kind: str) -> None:
    from tests.servers.tls import make_ca_and_cert
    other = make_ca_and_cert(tmp_path, hostname=samba.dc_fqdn)
    url = samba.url if url_kind == "starttls" else samba.ldaps_url
    untrusted = AdDirectory(ad_settings(samba, url=url, ca_file=str(other.ca_file)))
    event = windows(name())
    with pytest.raises(AuthFailed, match="TLS"):
        untrusted.register(event)
    # The DC's own CA, but a certificate for another name than the one expected.
    wrong_name = AdDirectory(ad_settings(samba, url=url, tls_server_name="dc9.nova.test"))
    with pytest.raises(AuthFailed, match="TLS"):
        wrong_name.register(event)
    assert show(samba, event.hostname) is None


def test_service_account_cannot_write_outside_its_ou(samba: SambaServer) -> None:
    elsewhere = AdDirectory(ad_settings(samba, ou="CN=Computers," + samba.base_dn))
    event = windows(name())
    with pytest.raises(AuthFailed, match="insufficientAccessRights"):
        elsewhere.register(event)
    assert show(samba, event.hostname) is None


@pytest.mark.parametrize("over, problem", [
    ({"dns_domain": None}, "dns_domain"),
    ({"uac": 512}, "uac"),
    ({"uac": 4096 | 8192}, "uac"),
    ({"linux": "maybe"}, "linux"),
    ({"ou": "OU=NovaVMs"}, "ou"),
])
def test_settings_that_cannot_work_are_refused(samba: SambaServer, over: Dict[str, Any],
                                               problem: str) -> None:
    with pytest.raises(Misconfigured, match=problem):
        AdDirectory(ad_settings(samba, **over))


def test_precheck_refuses_names_without_a_server_or_credentials(samba: SambaServer) -> None:
    """What every step's worker asks before its backend call: no connection, no password."""
    section = ad_settings(samba, url="ldap://127.0.0.1:1", password=None)
    with pytest.raises(InvalidEvent, match="at most 15"):
        AdDirectory.precheck(section, windows("win-0123456789ab"))
    AdDirectory.precheck(section, windows("win-0123"))
    # A Linux VM keeps an RFC 2307 host entry, which has no NetBIOS limit.
    AdDirectory.precheck(section, make_event(hostname="linux-0123456789ab", os_type="linux"))
    with pytest.raises(InvalidEvent, match="at most 15"):
        AdDirectory.precheck(ad_settings(samba, url="ldap://127.0.0.1:1", linux="computer"),
                             make_event(hostname="linux-0123456789ab", os_type="linux"))
