"""The LDAP driver against a real slapd (StartTLS, verified CA, least-privilege account).

It runs the directory contract, read back with the directory admin's own
connection; what is the LDAP driver's own (object classes, DN escaping, TLS)
stays below.
"""

import datetime
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest
from ldap3 import SUBTREE, Connection, Server, Tls
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from novahooks.event import Address
from novahooks.settings import Settings, load_settings
from tasks.backends.directory.ldap import LdapDirectory
from tasks.errors import AuthFailed, BackendUnavailable, Misconfigured
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.servers.base import free_port
from tests.servers.stack import Stack
from tests.tasks.backends.directory_contract import DirectoryContract, DirectoryReader
from tests.tasks.backends.driver_fixtures import driver_fixtures, env, from_stack


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
    conn.search(stack.slapd.hosts_base, "(description=%s)" % escape_filter_chars(instance_uuid),
                SUBTREE, attributes=["cn", "objectClass", "ipHostNumber", "macAddress",
                                     "description"])
    found = list(conn.entries)
    conn.unbind()
    return found


class SlapdReader(DirectoryReader):
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": str(e.cn.value).lower(),
                 "addresses": sorted(str(a) for a in e.ipHostNumber.values)
                 if "ipHostNumber" in e else []} for e in entries(self.stack, instance_uuid)]

    def plant(self, hostname: str) -> None:
        conn = admin(self.stack)
        assert conn.add("cn=%s,%s" % (escape_rdn(hostname), self.stack.slapd.hosts_base),
                        ["top", "device"], {"cn": hostname}), conn.result
        conn.unbind()


@pytest.fixture
def driver(settings: Settings) -> LdapDirectory:
    return LdapDirectory(settings.directory)


class TestLdapDirectory(driver_fixtures(
        "directory", from_stack("directory", LdapDirectory),
        lambda request: env("directory", password="wrong"),
        lambda request: env("directory", url="ldap://127.0.0.1:%d" % free_port(), timeout="1"),
        reader=lambda request: SlapdReader(request.getfixturevalue("stack"))),
        DirectoryContract):
    """The contract against slapd, read back with an admin's search."""


def test_object_classes_follow_what_the_entry_holds(stack: Stack,
                                                    driver: LdapDirectory) -> None:
    ev = make_event("create", addresses=None, vm_state="building")
    driver.register(ev)
    (entry,) = entries(stack, ev.uuid)
    assert entry.entry_dn == "cn=%s,%s" % (ev.hostname, stack.slapd.hosts_base)
    assert "ipHost" not in entry.objectClass.values
    m = mac()
    driver.register(ev._replace(kind="build", addresses=[Address(unique_v4(), 4, m),
                                                         Address(unique_v6(), 6, m)]))
    (entry,) = entries(stack, ev.uuid)
    assert entry.macAddress.values == [m]
    assert {"device", "ipHost", "ieee802Device"} <= set(entry.objectClass.values)
    driver.deregister(ev)


def test_dn_values_are_escaped(driver: LdapDirectory) -> None:
    assert driver.dn_for("a,b=c+d").startswith("cn=a\\,b\\=c\\+d,")


def test_untrusted_certificate_is_refused(stack: Stack, tmp_path: Path) -> None:
    from tests.servers.tls import make_ca_and_cert
    other = make_ca_and_cert(tmp_path)
    settings = load_settings(str(stack.config_path),
                             {"NOVAHOOKS_DIRECTORY_CA_FILE": str(other.ca_file)})
    with pytest.raises(AuthFailed, match="StartTLS"):
        LdapDirectory(settings.directory).register(make_event(addresses=[]))


def test_a_certificate_not_valid_yet_by_this_hosts_clock_is_retried_and_says_so(
        stack: Stack, tmp_path: Path) -> None:
    """A worker host whose clock is behind the CA's (or a certificate issued a moment
    ago) sees notBefore ahead: that mends with time, unlike an untrusted certificate."""
    from tests.servers.tls import make_ca_and_cert
    ahead = make_ca_and_cert(tmp_path, valid_from=datetime.datetime.now(
        datetime.timezone.utc) + datetime.timedelta(minutes=5))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(ahead.cert_file), str(ahead.key_file))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:  # a TLS server that completes handshakes, as an ldaps:// port does
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        settings = load_settings(str(stack.config_path), {
            "NOVAHOOKS_DIRECTORY_URL": "ldaps://127.0.0.1:%d" % port,
            "NOVAHOOKS_DIRECTORY_STARTTLS": "false",
            "NOVAHOOKS_DIRECTORY_CA_FILE": str(ahead.ca_file)})
        with pytest.raises(BackendUnavailable, match="not valid yet by this host's clock"):
            LdapDirectory(settings.directory).register(make_event(addresses=[]))
    finally:
        listener.close()


def test_clear_text_bind_is_refused(stack: Stack) -> None:
    settings = load_settings(str(stack.config_path), {"NOVAHOOKS_DIRECTORY_STARTTLS": "false"})
    with pytest.raises(Misconfigured, match="clear text"):
        LdapDirectory(settings.directory)
