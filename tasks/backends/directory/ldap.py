"""Host entries in an LDAP directory (OpenLDAP, 389-DS) through ldap3.

The entry is ``cn=<hostname>,<base_dn>`` with structural class ``device``,
auxiliary ``ipHost`` once addresses are known and ``ieee802Device`` for MACs;
``description`` holds the instance UUID, which is how a rename or a delete
finds it again. DN values go through ``escape_rdn`` and filter values through
``escape_filter_chars``. Certificates are verified unless the operator turns
that off explicitly; a bind is refused over a clear-text channel unless
StartTLS or ldaps is used.
"""

import ssl
import time
from typing import Any, Dict, List, Optional

from ldap3 import BASE, MODIFY_REPLACE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (LDAPException, LDAPSocketOpenError, LDAPSocketReceiveError,
                                   LDAPStartTLSError)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from novahooks.event import InstanceEvent
from tasks.backends.directory.base import (DirectoryDeregistered, DirectoryDriver,
                                           DirectoryHeld, DirectoryRegistered, EntryIdentity)
from tasks.errors import (AuthFailed, BackendUnavailable, Conflict, InvalidEvent, Misconfigured,
                          PermanentError, TransientError)

BACKEND = "ldap"
_TRANSIENT = {51: "busy", 52: "unavailable", 68: "entryAlreadyExists (raced)", 80: "other"}
_AUTH = {49: "invalidCredentials", 50: "insufficientAccessRights", 8: "strongAuthRequired",
         13: "confidentialityRequired"}
#: How ldap3 words a refused server certificate (it wraps ssl's errors in text).
_CERT_REFUSED = ("CERTIFICATE_VERIFY_FAILED", "doesn't match any name")
#: OpenSSL's words for a certificate whose notBefore lies ahead of this host's clock
_NOT_YET_VALID = "certificate is not yet valid"


class LdapDirectory(DirectoryDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        for key in ("url", "bind_dn", "base_dn"):
            if not getattr(settings, key):
                raise Misconfigured("[directory] %s is not set" % key, backend=BACKEND)
        if not settings.password:
            raise Misconfigured("[directory] password is not set (use NOVAHOOKS_DIRECTORY_"
                                "PASSWORD or password_file)", backend=BACKEND)
        ldaps = settings.url.lower().startswith("ldaps://")
        if not ldaps and not settings.starttls:
            raise Misconfigured("refusing to bind in clear text: use ldaps:// or starttls = true",
                                backend=BACKEND)
        # tls_server_name: a DC's certificate names its FQDN, not the address in url.
        tls = Tls(validate=ssl.CERT_REQUIRED if settings.verify_tls else ssl.CERT_NONE,
                  ca_certs_file=settings.ca_file, version=ssl.PROTOCOL_TLS_CLIENT,
                  valid_names=[settings.tls_server_name] if settings.tls_server_name else None)
        self.server = Server(settings.url, use_ssl=ldaps, tls=tls, get_info=NONE,
                             connect_timeout=settings.timeout)
        self.base = settings.base_dn

    def _connect(self) -> Connection:
        conn = Connection(self.server, user=self.settings.bind_dn,
                          password=self.settings.password.reveal(),
                          receive_timeout=max(1, int(self.settings.timeout)),
                          raise_exceptions=False)
        try:
            conn.open()
            if self.settings.starttls and not self.server.ssl:
                conn.start_tls()
            if not conn.bind():
                self._fail(conn, "bind as %s" % self.settings.bind_dn)
        except LDAPStartTLSError as exc:
            self._not_yet_valid(exc)
            raise AuthFailed("StartTLS with %s failed (certificate not trusted?): %s"
                             % (self.settings.url, exc), backend=BACKEND) from exc
        except (LDAPSocketOpenError, LDAPSocketReceiveError) as exc:
            self._not_yet_valid(exc)
            if any(mark in str(exc) for mark in _CERT_REFUSED):
                # ldaps: a certificate we cannot verify stays unverifiable on retry.
                raise AuthFailed("TLS with %s failed: certificate not trusted or not for "
                                 "this name: %s" % (self.settings.url, exc),
                                 backend=BACKEND) from exc
            raise BackendUnavailable("%s unreachable: %s" % (self.settings.url, exc),
                                     backend=BACKEND) from exc
        except LDAPException as exc:
            raise BackendUnavailable("%s: %s" % (self.settings.url, exc), backend=BACKEND) from exc
        return conn

    def _not_yet_valid(self, exc: Exception) -> None:
        """A certificate valid only from a time this host has not reached: a clock behind
        (or a certificate issued moments ago) mends with time, so retry; any other
        verification failure stays as it is and is permanent."""
        if _NOT_YET_VALID in str(exc):
            raise BackendUnavailable(
                "TLS with %s: the server's certificate is not valid yet by this host's "
                "clock (%s UTC): is this host's clock behind? %s"
                % (self.settings.url, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), exc),
                backend=BACKEND) from exc

    def _fail(self, conn: Connection, what: str) -> None:
        code = conn.result.get("result")
        text = "%s: %s (%s)" % (what, conn.result.get("description"),
                                conn.result.get("message") or code)
        if code in _AUTH:
            raise AuthFailed(text, backend=BACKEND)
        if code in _TRANSIENT or code is None:
            raise TransientError(text, backend=BACKEND)
        if code == 34:
            raise InvalidEvent("hostname", text)
        raise PermanentError(text, backend=BACKEND)

    def _entries_of(self, conn: Connection, instance_uuid: str) -> List[Any]:
        flt = "(&(objectClass=device)(description=%s))" % escape_filter_chars(instance_uuid)
        if not conn.search(self.base, flt, SUBTREE, attributes=["cn", "description"]) \
                and conn.result.get("result") not in (0, 32):
            self._fail(conn, "search %s" % flt)
        return list(conn.entries)

    def _entry(self, conn: Connection, dn: str) -> Optional[Any]:
        if conn.search(dn, "(objectClass=*)", BASE, attributes=["description", "objectClass"]):
            return conn.entries[0] if conn.entries else None
        if conn.result.get("result") == 32:
            return None
        self._fail(conn, "read %s" % dn)
        return None

    def dn_for(self, hostname: str) -> str:
        return "cn=%s,%s" % (escape_rdn(hostname), self.base)

    def _attributes(self, event: InstanceEvent, keep_addresses: List[str],
                    keep_macs: List[str]) -> Dict[str, List[str]]:
        addresses = keep_addresses if event.addresses is None else sorted(
            {a.address for a in event.addresses})
        macs = keep_macs if event.addresses is None else sorted(
            {a.mac for a in event.addresses if a.mac})
        classes = ["top", "device"] + (["ipHost"] if addresses else []) + \
            (["ieee802Device"] if macs else [])
        return {"objectClass": classes, "ipHostNumber": addresses, "macAddress": macs,
                "description": [event.uuid]}

    def register(self, event: InstanceEvent) -> DirectoryRegistered:
        self.precheck(self.settings, event)
        dn = self.dn_for(event.hostname or "")
        conn = self._connect()
        try:
            for stale in self._entries_of(conn, event.uuid):
                if stale.entry_dn.lower() != dn.lower() and not conn.delete(stale.entry_dn):
                    self._fail(conn, "remove renamed entry %s" % stale.entry_dn)
            current = self._entry(conn, dn)
            if current is None:
                attrs = self._attributes(event, [], [])
                body = {k: v for k, v in attrs.items() if v and k != "objectClass"}
                body["cn"] = [str(event.hostname)]
                if not conn.add(dn, attrs["objectClass"], body):
                    self._fail(conn, "add %s" % dn)
                return {"dn": dn, "action": "added", **self._identity(conn, dn)}
            self._claim(current, dn, event.uuid)
            full = conn.search(dn, "(objectClass=*)", BASE,
                               attributes=["ipHostNumber", "macAddress"]) and conn.entries[0]
            keep_addresses = [str(v) for v in full.ipHostNumber.values] \
                if full and "ipHostNumber" in full else []
            keep_macs = [str(v) for v in full.macAddress.values] \
                if full and "macAddress" in full else []
            attrs = self._attributes(event, keep_addresses, keep_macs)
            changes = {k: [(MODIFY_REPLACE, v)] for k, v in attrs.items()}
            if not conn.modify(dn, changes):
                self._fail(conn, "modify %s" % dn)
            return {"dn": dn, "action": "updated", **self._identity(conn, dn)}
        finally:
            conn.unbind()

    @staticmethod
    def _claim(current: Any, dn: str, instance_uuid: str) -> None:
        """An entry at the name that does not carry the instance's UUID is someone else's."""
        owners = [str(v) for v in current.description.values] if "description" in current \
            else []
        if instance_uuid not in owners:
            raise Conflict("%s exists and belongs to %s, not instance %s"
                           % (dn, ", ".join(owners) or "no instance", instance_uuid),
                           backend=BACKEND)

    def preflight(self, event: InstanceEvent) -> None:
        """The name as :meth:`register` would take it: reserved names, and an entry at the
        name that another instance or a person holds, read with a search and nothing else."""
        self.precheck(self.settings, event)
        dn = self.dn_for(event.hostname or "")
        conn = self._connect()
        try:
            current = self._entry(conn, dn)
            if current is not None:
                self._claim(current, dn, event.uuid)
        finally:
            conn.unbind()

    @staticmethod
    def _identity(conn: Any, dn: str) -> EntryIdentity:
        """The entry's own identity (RFC 4530 ``entryUUID``) and change stamp, which the
        server keeps however the entry is renamed: the audit record names the entry by it."""
        if not conn.search(dn, "(objectClass=*)", BASE,
                           attributes=["entryUUID", "modifyTimestamp"]) or not conn.entries:
            return {}
        entry = conn.entries[0]
        found = {}  # type: EntryIdentity
        if "entryUUID" in entry:
            found["entry_uuid"] = str(entry.entryUUID.value)
        if "modifyTimestamp" in entry:
            found["modify_timestamp"] = str(entry.modifyTimestamp.value)
        return found

    def deregister(self, event: InstanceEvent) -> DirectoryDeregistered:
        conn = self._connect()
        removed = []  # type: List[str]
        try:
            for entry in self._entries_of(conn, event.uuid):
                if not conn.delete(entry.entry_dn) and conn.result.get("result") != 32:
                    self._fail(conn, "delete %s" % entry.entry_dn)
                removed.append(entry.entry_dn)
        finally:
            conn.unbind()
        return {"removed": removed}

    def describe(self, instance_uuid: str) -> DirectoryHeld:
        conn = self._connect()
        try:
            return {"entries": [e.entry_dn for e in self._entries_of(conn, instance_uuid)]}
        finally:
            conn.unbind()

    def check(self) -> str:
        conn = self._connect()
        try:
            if not conn.search(self.base, "(objectClass=*)", BASE, attributes=["1.1"]):
                self._fail(conn, "read %s" % self.base)
            return "%s: bound as %s over %s, %s readable" % (
                self.settings.url, self.settings.bind_dn,
                "ldaps" if self.server.ssl else "StartTLS", self.base)
        finally:
            conn.unbind()

    def managed(self) -> Dict[str, Dict[str, Any]]:
        conn = self._connect()
        try:
            if not conn.search(self.base, "(&(objectClass=device)(description=*))", SUBTREE,
                               attributes=["cn", "description", "ipHostNumber"]) \
                    and conn.result.get("result") not in (0, 32):
                self._fail(conn, "list entries under %s" % self.base)
            held = {}  # type: Dict[str, Dict[str, Any]]
            for entry in conn.entries:
                for uuid in entry.description.values:
                    addresses = entry.ipHostNumber.values if "ipHostNumber" in entry else []
                    held[str(uuid)] = {"dn": entry.entry_dn, "hostname": str(entry.cn.value),
                                       "addresses": sorted(str(a) for a in addresses)}
            return held
        finally:
            conn.unbind()
