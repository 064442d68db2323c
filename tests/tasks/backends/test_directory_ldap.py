"""The LDAP driver against a real slapd (StartTLS, verified CA, least-privilege account)."""

import ssl
from typing import Any, List

import pytest
from ldap3 import SUBTREE, Connection, Server, Tls

from novahooks.event import Address
from tests.servers.stack import Stack
from novahooks.settings import Settings, load_settings
from tasks.backends.directory.ldap import LdapDirectory
from tasks.errors import AuthFailed, BackendUnavailable, Conflict, Misconfigured
from tests.conftest import mac, make_event, unique_v4, unique_v6


def admin(stack: Stack) -> Connection:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(stack.slapd.ca_file))
    conn = Connection(Server(stack.slapd.url, tls=tls), stack.slapd.admin_dn,
                      stack.slapd.admin_password)
    conn.open()
    conn.start_tls()
    assert conn.bind()
    return conn


def entries(stack: Stack, instance_uuid: str) -> List[Any]:
    conn = admin(stack)
    conn.search(stack.slapd.hosts_base, "(description=%s)" % instance_uuid, SUBTREE,
                attributes=["cn", "objectClass", "ipHostNumber", "macAddress", "description"])
    found = list(conn.entries)
    conn.unbind()
    return found


@pytest.fixture
def driver(settings: Settings) -> LdapDirectory:
    return LdapDirectory(settings.directory)


def test_create_without_addresses_then_build_adds_them(stack: Stack,
                                                       driver: LdapDirectory) -> None:
    ev = make_event("create", addresses=None, vm_state="building")
    driver.register(ev)
    (entry,) = entries(stack, ev.uuid)
    assert entry.entry_dn == "cn=%s,%s" % (ev.hostname, stack.slapd.hosts_base)
    assert "ipHost" not in entry.objectClass.values
    v4, v6, m = unique_v4(), unique_v6(), mac()
    driver.register(ev._replace(kind="build", addresses=[Address(v4, 4, m), Address(v6, 6, m)]))
    driver.register(ev._replace(kind="build", addresses=[Address(v4, 4, m), Address(v6, 6, m)]))
    (entry,) = entries(stack, ev.uuid)
    assert sorted(entry.ipHostNumber.values) == sorted([v4, v6])
    assert entry.macAddress.values == [m]
    assert {"device", "ipHost", "ieee802Device"} <= set(entry.objectClass.values)


def test_rename_moves_the_entry(stack: Stack, driver: LdapDirectory) -> None:
    ev = make_event(addresses=[Address(unique_v4(), 4, mac())])
    driver.register(ev)
    driver.register(ev._replace(hostname=ev.hostname + "-new"))
    (entry,) = entries(stack, ev.uuid)
    assert entry.cn.value == ev.hostname + "-new"


def test_deregister_removes_entry_and_is_idempotent(stack: Stack, driver: LdapDirectory) -> None:
    ev = make_event(addresses=[Address(unique_v4(), 4, mac())])
    driver.register(ev)
    assert driver.deregister(ev)["removed"]
    assert entries(stack, ev.uuid) == []
    assert driver.deregister(ev) == {"removed": []}


def test_same_hostname_other_instance_is_conflict(stack: Stack, driver: LdapDirectory) -> None:
    first = make_event(addresses=[])
    driver.register(first)
    second = make_event(hostname=first.hostname, addresses=[])
    with pytest.raises(Conflict, match=first.uuid):
        driver.register(second)
    assert entries(stack, second.uuid) == []


def test_filter_special_characters_in_uuid_do_not_match_everything(
        stack: Stack, driver: LdapDirectory) -> None:
    ev = make_event(addresses=[])
    driver.register(ev)
    assert driver.deregister(ev._replace(uuid="*")) == {"removed": []}
    assert len(entries(stack, ev.uuid)) == 1


def test_dn_values_are_escaped(driver: LdapDirectory) -> None:
    assert driver.dn_for("a,b=c+d") .startswith("cn=a\\,b\\=c\\+d,")


def test_wrong_password_is_auth_failure(stack: Stack) -> None:
    settings = load_settings(str(stack.config_path), {"NOVAHOOKS_DIRECTORY_PASSWORD": "wrong"})
    with pytest.raises(AuthFailed, match="invalidCredentials"):
        LdapDirectory(settings.directory).register(make_event(addresses=[]))


def test_untrusted_certificate_is_refused(stack: Stack, tmp_path) -> None:
    from tests.servers.tls import make_ca_and_cert
    other = make_ca_and_cert(tmp_path)
    settings = load_settings(str(stack.config_path),
                             {"NOVAHOOKS_DIRECTORY_CA_FILE": str(other.ca_file)})
    with pytest.raises(AuthFailed, match="StartTLS"):
        LdapDirectory(settings.directory).register(make_event(addresses=[]))


def test_clear_text_bind_is_refused(stack: Stack) -> None:
    settings = load_settings(str(stack.config_path), {"NOVAHOOKS_DIRECTORY_STARTTLS": "false"})
    with pytest.raises(Misconfigured, match="clear text"):
        LdapDirectory(settings.directory)


def test_unreachable_directory_is_transient(stack: Stack) -> None:
    from tests.servers.base import free_port
    settings = load_settings(str(stack.config_path), {
        "NOVAHOOKS_DIRECTORY_URL": "ldap://127.0.0.1:%d" % free_port(),
        "NOVAHOOKS_DIRECTORY_TIMEOUT": "1"})
    with pytest.raises(BackendUnavailable):
        LdapDirectory(settings.directory).register(make_event(addresses=[]))
