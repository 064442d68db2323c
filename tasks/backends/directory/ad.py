"""Active Directory: the computer object a Windows VM needs to join the domain.

A Windows VM joins the domain most safely into a pre-staged computer object:
``CN=<NAME>,<ou>`` of class ``computer`` with ``sAMAccountName`` ``NAME$``,
``dNSHostName`` and the ``HOST/`` service principal names. The join (run with
an account allowed to reset that object's password) sets the machine password
and enables the account.

``userAccountControl`` defaults to 4098: WORKSTATION_TRUST_ACCOUNT (4096) and
ACCOUNTDISABLE (2), as ``samba-tool computer create`` pre-stages accounts. An
enabled pre-staged account would be one nobody holds the password of; with
PASSWD_NOTREQD (32, which ADUC sets) it could even keep an empty or well-known
password, which AD security audits flag. The driver sets ``userAccountControl``
only when it creates the object and never after, so a later event does not
disable a machine that has joined.

Names are checked before the server is contacted: a NetBIOS computer name has
at most 15 characters, and AD refuses dots, underscores, spaces, names made of
digits only and reserved words. The instance UUID sits in ``description``
(like the ldap driver's host entries), and every search filters on it, so the
driver never changes or deletes an object it did not make; a name held by any
other object anywhere in the domain is a conflict.

Linux VMs (``os_type`` other than ``windows``) follow ``[directory] linux``:
``host`` keeps the ldap driver's device entry (RFC 2307 classes, which AD
provisioned with RFC 2307 has) under ``base_dn``; ``computer`` gives them a
computer object too, for realmd/sssd joins; ``skip`` leaves AD alone.
"""

import contextlib
import os
import re
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ldap3 import BASE, MODIFY_ADD, MODIFY_REPLACE, SUBTREE, Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from novahooks.event import InstanceEvent
from tasks.backends.directory.base import (DirectoryDeregistered, DirectoryHeld,
                                           DirectoryRegistered)
from tasks.backends.directory.ldap import LdapDirectory
from tasks.errors import (BackendUnavailable, Conflict, InvalidEvent, Misconfigured,
                          PermanentError)

BACKEND = "ad"
NETBIOS_MAX = 15
WORKSTATION_TRUST_ACCOUNT = 0x1000
ACCOUNTDISABLE = 0x2
#: Account-type bits that make an object something other than a workstation.
_OTHER_TYPES = 0x100 | 0x200 | 0x800 | 0x2000
_TREE_DELETE = "1.2.840.113556.1.4.805"
_NAME = re.compile(r"(?!-)[A-Za-z0-9-]+(?<!-)", re.ASCII)
#: Words Windows refuses as computer names (Microsoft: "Naming conventions in Active
#: Directory for computers, domains, sites, and OUs").
RESERVED = frozenset(("ANONYMOUS", "AUTHENTICATED USER", "BATCH", "BUILTIN", "CREATOR GROUP",
                      "CREATOR GROUP SERVER", "CREATOR OWNER", "CREATOR OWNER SERVER",
                      "DIALUP", "DIGEST AUTH", "DOMAIN", "ENTERPRISE", "INTERACTIVE",
                      "INTERNET", "LOCAL", "LOCAL SYSTEM", "NETWORK", "NETWORK SERVICE",
                      "NT AUTHORITY", "NT DOMAIN", "NTLM AUTH", "NULL", "PROXY",
                      "REMOTE INTERACTIVE", "RESTRICTED", "SCHANNEL AUTH", "SELF", "SERVER",
                      "SERVICE", "SYSTEM", "TERMINAL SERVER", "THIS ORGANIZATION", "USERS",
                      "WORLD"))
_COMPUTER_CLASSES = ["top", "person", "organizationalPerson", "user", "computer"]
#: Seconds a thread's connection may sit idle and still be used: below AD's
#: MaxConnIdleTime (900 s; Samba's LDAP server closes idle connections then too).
REUSE_IDLE = 300.0


class _Held(threading.local):
    """Each thread's own bound connection between two calls (ldap3's SYNC strategy is
    not safe to share between threads)."""

    conn: Optional[Connection] = None
    used: float = 0.0
    #: The process that opened it: a forked child (Celery's prefork pool) must not share
    #: its parent's TLS session, so it opens its own.
    pid: int = 0


def wants_computer(settings: Any, event: InstanceEvent) -> bool:
    """Windows VMs get a computer object; Linux VMs too with ``[directory] linux = computer``."""
    return is_windows(event) or settings.linux == "computer"


def computer_name(hostname: Optional[str]) -> str:
    """The NetBIOS computer name for a hostname, or InvalidEvent saying why AD refuses it."""
    if not hostname:
        raise InvalidEvent("hostname", "missing; an AD computer object needs a name")
    if len(hostname) > NETBIOS_MAX:
        raise InvalidEvent("hostname", "%r is %d characters; an Active Directory computer "
                           "name (NetBIOS) allows at most %d"
                           % (hostname, len(hostname), NETBIOS_MAX))
    if not _NAME.fullmatch(hostname):
        raise InvalidEvent("hostname", "%r has characters Active Directory refuses in a "
                           "computer name (letters, digits and inner hyphens only; no dots, "
                           "underscores or spaces)" % hostname)
    if hostname.isdigit():
        raise InvalidEvent("hostname", "%r is digits only, which Active Directory refuses "
                           "as a computer name" % hostname)
    if hostname.upper() in RESERVED:
        raise InvalidEvent("hostname", "%r is a name Windows reserves" % hostname)
    return hostname.upper()


def is_windows(event: InstanceEvent) -> bool:
    return (event.os_type or "").strip().lower() == "windows"


class AdDirectory(LdapDirectory):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if not settings.dns_domain:
            raise Misconfigured("[directory] dns_domain is not set (the AD domain's DNS name, "
                                "for dNSHostName and the HOST/ SPNs)", backend=BACKEND)
        uac = settings.uac
        if not uac & WORKSTATION_TRUST_ACCOUNT or uac & _OTHER_TYPES:
            raise Misconfigured("[directory] uac: %d is not a workstation trust account "
                                "(must include 4096 and no other account type)" % uac,
                                backend=BACKEND)
        if settings.linux not in ("host", "computer", "skip"):
            raise Misconfigured("[directory] linux: %r is not host, computer or skip"
                                % settings.linux, backend=BACKEND)
        self.ou = settings.ou or settings.base_dn
        parts = [rdn for rdn in re.split(r"(?<!\\),", self.ou) if rdn.strip()]
        domain = [rdn.strip() for rdn in parts if rdn.strip().upper().startswith("DC=")]
        if not domain:
            raise Misconfigured("[directory] ou: %r names no domain (DC=...)" % self.ou,
                                backend=BACKEND)
        self.domain_dn = ",".join(domain)
        self.dns_domain = settings.dns_domain.strip(".").lower()
        self._netbios = None  # type: Optional[List[str]]
        self._held = _Held()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Connection]:
        """This thread's bound connection, kept for its next call.

        A DC answers a StartTLS handshake and a bind in about 0.1 s, several times a
        password set, and a single-process DC does them one at a time: a mass boot's
        first reads waited mostly on binds (bench/vendordata.py). A connection an
        unexpected error went through is closed, not kept: it may be in any state, and
        the next call opens a fresh one. A refusal (Conflict, a bad name) keeps it.
        """
        held = self._held
        conn, held.conn = held.conn, None
        if conn is not None and held.pid != os.getpid():
            conn = None  # the parent's: left to it, not unbound from here
        if conn is not None and (conn.closed or not conn.bound
                                 or time.monotonic() - held.used > REUSE_IDLE):
            self._close(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            held.pid = os.getpid()
        try:
            yield conn
        except PermanentError:
            held.conn, held.used = conn, time.monotonic()
            raise
        except LDAPException as exc:
            self._close(conn)
            raise BackendUnavailable("%s: %s" % (self.settings.url, exc),
                                     backend=BACKEND) from exc
        except BaseException:
            self._close(conn)
            raise
        held.conn, held.used = conn, time.monotonic()

    @staticmethod
    def _close(conn: Connection) -> None:
        try:
            conn.unbind()
        except LDAPException:
            pass

    def _wants_computer(self, event: InstanceEvent) -> bool:
        return wants_computer(self.settings, event)

    def computer_dn(self, name: str) -> str:
        return "CN=%s,%s" % (escape_rdn(name), self.ou)

    def _computers(self, conn: Connection, flt: str, base: str,
                   attributes: Tuple[str, ...] = ("cn", "description")) -> List[Any]:
        if not conn.search(base, flt, SUBTREE, attributes=list(attributes)) \
                and conn.result.get("result") not in (0, 32):
            self._fail(conn, "search %s" % flt)
        return list(conn.entries)

    def _computers_of(self, conn: Connection, instance_uuid: str) -> List[Any]:
        return self._computers(conn, "(&(objectClass=computer)(description=%s))"
                               % escape_filter_chars(instance_uuid), self.ou,
                               ("cn", "description", "dNSHostName", "ipHostNumber"))

    def _delete(self, conn: Connection, dn: str) -> None:
        if conn.delete(dn) or conn.result.get("result") == 32:
            return
        # 66 notAllowedOnNonLeaf: a joined machine may hold child objects (e.g. BitLocker).
        if conn.result.get("result") != 66 or not conn.delete(dn, controls=[
                (_TREE_DELETE, True, None)]):
            self._fail(conn, "delete %s" % dn)

    @classmethod
    def precheck(cls, settings: Any, event: InstanceEvent) -> None:
        super().precheck(settings, event)
        if wants_computer(settings, event):
            computer_name(event.hostname)

    def preflight(self, event: InstanceEvent) -> None:
        self.precheck(self.settings, event)
        if not self._wants_computer(event):
            return
        name = computer_name(event.hostname)
        with self._session() as conn:
            self._claim_name(conn, name, self.computer_dn(name), event.uuid)

    def _netbios_names(self, conn: Connection) -> List[str]:
        """The domain's (and forest's) NetBIOS names, from the partitions container."""
        if self._netbios is None:
            found = self._computers(conn, "(nETBIOSName=*)", "CN=Partitions,CN=Configuration,"
                                    + self.domain_dn, ("nETBIOSName",))
            self._netbios = [str(v).upper() for entry in found
                             for v in entry.nETBIOSName.values]
        return self._netbios

    def _claim_name(self, conn: Connection, name: str, dn: str, instance_uuid: str) -> bool:
        """True if our own computer object holds ``name``; False if nobody does; else
        Conflict: the domain's NetBIOS name, or any object (user, group, computer,
        anywhere in the domain) holding it as sAMAccountName, with or without "$"."""
        if name.upper() in self._netbios_names(conn):
            raise Conflict("%s is the domain's NetBIOS name" % name, backend=BACKEND)
        holders = self._computers(conn, "(|(sAMAccountName=%s)(sAMAccountName=%s))" % (
            escape_filter_chars(name), escape_filter_chars(name + "$")), self.domain_dn,
            ("cn", "description", "sAMAccountName"))
        ours = False
        for holder in holders:
            owners = [str(v) for v in holder.description.values] \
                if "description" in holder else []
            if holder.entry_dn.lower() != dn.lower() or instance_uuid not in owners:
                account = str(holder.sAMAccountName.value) if "sAMAccountName" in holder \
                    else name
                raise Conflict("account %s exists as %s and belongs to %s, not instance %s"
                               % (account, holder.entry_dn, ", ".join(owners) or
                                  "no instance", instance_uuid), backend=BACKEND)
            ours = True
        return ours

    def register(self, event: InstanceEvent) -> DirectoryRegistered:
        self.precheck(self.settings, event)
        if not self._wants_computer(event):
            if self.settings.linux == "skip":
                return {"dn": None, "action": "skipped",
                        "skipped": "not a Windows VM ([directory] linux = skip)"}
            return super().register(event)
        name = computer_name(event.hostname)
        dn = self.computer_dn(name)
        fqdn = "%s.%s" % (name.lower(), self.dns_domain)
        spns = ["HOST/%s" % name, "HOST/%s" % fqdn]
        addresses = None if event.addresses is None else sorted(
            {a.address for a in event.addresses})
        macs = None if event.addresses is None else sorted(
            {a.mac for a in event.addresses if a.mac})
        with self._session() as conn:
            for stale in self._computers_of(conn, event.uuid):
                if stale.entry_dn.lower() != dn.lower():
                    self._delete(conn, stale.entry_dn)
            if self._claim_name(conn, name, dn, event.uuid):
                self._update(conn, dn, fqdn, spns, addresses, macs)
                return {"dn": dn, "sAMAccountName": name + "$", "action": "updated",
                        "windows": is_windows(event)}
            classes = list(_COMPUTER_CLASSES) + (["ipHost"] if addresses else []) + \
                (["ieee802Device"] if macs else [])
            body = {"cn": name, "sAMAccountName": name + "$", "dNSHostName": fqdn,
                    "servicePrincipalName": spns, "userAccountControl": str(self.settings.uac),
                    "description": event.uuid}  # type: Dict[str, Any]
            if addresses:
                body["ipHostNumber"] = addresses
            if macs:
                body["macAddress"] = macs
            if not conn.add(dn, classes, body):
                if conn.result.get("result") in (19, 68):
                    raise Conflict("add %s: %s" % (dn, conn.result.get("message")),
                                   backend=BACKEND)
                self._fail(conn, "add %s" % dn)
            return {"dn": dn, "sAMAccountName": name + "$", "action": "added",
                    "windows": is_windows(event)}

    def _update(self, conn: Connection, dn: str, fqdn: str, spns: List[str],
                addresses: Optional[List[str]], macs: Optional[List[str]]) -> None:
        """Bring our own object in line; leave what the join set (password, UAC, SPNs)."""
        if not conn.search(dn, "(objectClass=*)", BASE,
                           attributes=["objectClass", "servicePrincipalName"]):
            self._fail(conn, "read %s" % dn)
        current = conn.entries[0]
        have_classes = {str(v).lower() for v in current.objectClass.values}
        have_spns = {str(v).lower() for v in current.servicePrincipalName.values} \
            if "servicePrincipalName" in current else set()
        changes = {"dNSHostName": [(MODIFY_REPLACE, [fqdn])]}  # type: Dict[str, Any]
        missing = [spn for spn in spns if spn.lower() not in have_spns]
        if missing:
            changes["servicePrincipalName"] = [(MODIFY_ADD, missing)]
        new_classes = [cls for cls, values in (("ipHost", addresses), ("ieee802Device", macs))
                       if values and cls.lower() not in have_classes]
        if new_classes and not conn.modify(dn, {"objectClass": [(MODIFY_ADD, new_classes)]}):
            # Samba checks attributes against the classes the entry had before the
            # modify, so the auxiliary classes go first, on their own.
            self._fail(conn, "add object classes %s to %s" % (", ".join(new_classes), dn))
        if addresses is not None and (addresses or "iphost" in have_classes):
            changes["ipHostNumber"] = [(MODIFY_REPLACE, addresses)]
        if macs is not None and (macs or "ieee802device" in have_classes):
            changes["macAddress"] = [(MODIFY_REPLACE, macs)]
        if not conn.modify(dn, changes):
            if conn.result.get("result") == 19:
                raise Conflict("modify %s: %s" % (dn, conn.result.get("message")),
                               backend=BACKEND)
            self._fail(conn, "modify %s" % dn)

    def _own_unjoined(self, conn: Connection, event: InstanceEvent) -> str:
        """The DN of this instance's own computer object, if no machine has joined it.

        A join credential sets the account's password: on an account that has one
        already (``pwdLastSet`` not 0: a machine joined it, or an earlier credential
        was issued) that would cut the machine off the domain, so Conflict instead.
        """
        dn = self.computer_dn(computer_name(event.hostname))
        found = [entry for entry in self._computers(
            conn, "(&(objectClass=computer)(description=%s))"
            % escape_filter_chars(event.uuid), self.ou, ("cn", "pwdLastSet"))
            if entry.entry_dn.lower() == dn.lower()]
        if not found:
            raise Conflict("computer %s is not instance %s's own (register it first)"
                           % (dn, event.uuid), backend=BACKEND)
        last_set = found[0].pwdLastSet.raw_values if "pwdLastSet" in found[0] else []
        if last_set and last_set[0] not in (b"0", "0"):
            raise Conflict("computer %s has a password already (a machine joined it, or "
                           "a credential was issued): a new one would cut that machine off "
                           "the domain" % dn, backend=BACKEND)
        return dn

    def check_unjoined(self, event: InstanceEvent) -> str:
        """:meth:`_own_unjoined`, for credentials made elsewhere (Samba's ODJ provision)."""
        with self._session() as conn:
            return self._own_unjoined(conn, event)

    def set_machine_password(self, event: InstanceEvent, password: str) -> Dict[str, Any]:
        """Give this instance's computer object a password and enable it: a one-time join.

        ``adcli join --one-time-password`` and Windows' UnsecureJoin authenticate as the
        machine account with a password set beforehand, then change it themselves. Only
        the object this instance made (``description`` = its UUID), and only while it has
        no password (no machine joined it), is touched; AD takes ``unicodePwd`` only over an
        encrypted connection, which every bind here is. The password never reaches a
        log or an error message: errors quote the server only.
        """
        name = computer_name(event.hostname)
        with self._session() as conn:
            dn = self._own_unjoined(conn, event)
            value = ('"%s"' % password).encode("utf-16-le")
            uac = str(self.settings.uac & ~ACCOUNTDISABLE)
            if not conn.modify(dn, {"unicodePwd": [(MODIFY_REPLACE, [value])],
                                    "userAccountControl": [(MODIFY_REPLACE, [uac])]}):
                self._fail(conn, "set the password of %s" % dn)
            return {"dn": dn, "sAMAccountName": name + "$", "userAccountControl": int(uac)}

    def deregister(self, event: InstanceEvent) -> DirectoryDeregistered:
        removed = super().deregister(event)["removed"]  # host entries of Linux VMs
        with self._session() as conn:
            for entry in self._computers_of(conn, event.uuid):
                self._delete(conn, entry.entry_dn)
                removed.append(entry.entry_dn)
        return {"removed": removed}

    def describe(self, instance_uuid: str) -> DirectoryHeld:
        hosts = super().describe(instance_uuid)["entries"]
        with self._session() as conn:
            return {"entries": hosts + [e.entry_dn for e in self._computers_of(
                conn, instance_uuid)]}

    def check(self) -> str:
        hosts = super().check()
        with self._session() as conn:
            if not conn.search(self.ou, "(objectClass=*)", BASE, attributes=["1.1"]):
                self._fail(conn, "read %s" % self.ou)
        return "%s; computer objects in %s" % (hosts, self.ou)

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held = super().managed()
        with self._session() as conn:
            for entry in self._computers(conn, "(&(objectClass=computer)(description=*))",
                                         self.ou, ("cn", "description", "ipHostNumber")):
                addresses = entry.ipHostNumber.values if "ipHostNumber" in entry else []
                for uuid in entry.description.values:
                    held[str(uuid)] = {"dn": entry.entry_dn,
                                       "hostname": str(entry.cn.value).lower(),
                                       "addresses": sorted(str(a) for a in addresses)}
            return held
