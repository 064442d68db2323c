"""RFC 2136 dynamic updates signed with TSIG, through dnspython.

Works with any primary that accepts signed updates (BIND, PowerDNS, Knot).
Unsigned updates are refused at start-up: an update any host can send is a
hijack waiting to happen. The one exception is explicit: ``[dns]
allow_unsigned = true`` without a TSIG key, for a server that restricts
updates by address instead. Active Directory's DNS is one: it verifies only
GSS-TSIG (Kerberos), never a shared TSIG key, so without Kerberos the zone
must allow "nonsecure" updates (Samba: ``allow dns updates = nonsecure``) and
the network must keep other hosts away from it. A warning says so at start.
Every update carries prerequisites on the ownership TXT record, so two
workers racing on one name cannot both win.
"""

import base64
import binascii
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.tsig
import dns.tsigkeyring
import dns.update

from novahooks.event import Address
from tasks.backends.dns.base import DnsDriver, owner_marker
from tasks.policy import reverse_zone
from tasks.errors import (AuthFailed, BackendUnavailable, Conflict, Misconfigured, OutOfScope,
                          PermanentError, TransientError)

BACKEND = "dns"
LOG = logging.getLogger("novahooks.dns")
_TRANSIENT_RCODES = (dns.rcode.SERVFAIL, dns.rcode.YXRRSET, dns.rcode.NXRRSET, dns.rcode.YXDOMAIN)


class Rfc2136Dns(DnsDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if not settings.zone:
            raise Misconfigured("[dns] zone is not set", backend=BACKEND)
        self.keyname = None  # type: Optional[dns.name.Name]
        self.keyring = None  # type: Optional[Dict[dns.name.Name, Any]]
        self.algorithm = dns.name.from_text(settings.tsig_algorithm)
        if settings.tsig_key_name or settings.tsig_secret or not settings.allow_unsigned:
            if not settings.tsig_key_name or not settings.tsig_secret:
                raise Misconfigured("refusing to send unsigned updates: set [dns] "
                                    "tsig_key_name and tsig_secret (or allow_unsigned = true "
                                    "for a server that restricts updates by address)",
                                    backend=BACKEND)
            try:
                base64.b64decode(settings.tsig_secret.reveal(), validate=True)
            except (binascii.Error, ValueError):
                raise Misconfigured("[dns] tsig_secret is not base64", backend=BACKEND) from None
            self.keyname = dns.name.from_text(settings.tsig_key_name)
            self.keyring = dns.tsigkeyring.from_text(
                {settings.tsig_key_name: settings.tsig_secret.reveal()})
        else:
            LOG.warning("[dns] allow_unsigned = true: sending UNSIGNED dynamic updates to %s; "
                        "anyone who can reach it can change zone %s unless the server "
                        "restricts updates by address", settings.server, settings.zone)
        self.zone = dns.name.from_text(settings.zone)
        self.reverse_zones = sorted((dns.name.from_text(z) for z in settings.reverse_zones),
                                    key=lambda n: -len(n.labels))

    def _reverse_zone(self, address: str) -> Tuple[dns.name.Name, dns.name.Name]:
        reverse = dns.reversename.from_address(address)
        chosen = reverse_zone(address, self.reverse_prefixes)  # [naming prefix] rules first
        if chosen is not None:
            return reverse, dns.name.from_text(chosen)
        for zone in self.reverse_zones:
            if reverse.is_subdomain(zone):
                return reverse, zone
        raise OutOfScope("address %s is outside every configured reverse zone (%s)"
                         % (address, ", ".join(z.to_text() for z in self.reverse_zones) or "none"),
                         backend=BACKEND)

    def _name(self, fqdn: str) -> dns.name.Name:
        name = dns.name.from_text(fqdn)
        if not name.is_subdomain(self.zone):
            raise OutOfScope("%s is outside the configured zone %s" % (fqdn, self.zone),
                             backend=BACKEND)
        return name

    def _call(self, message: dns.message.Message) -> dns.message.Message:
        try:
            response = dns.query.tcp(message, self.settings.server, port=self.settings.port,
                                     timeout=self.settings.timeout)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerBadTime,
                dns.tsig.PeerBadTruncation, dns.tsig.BadSignature) as exc:
            raise AuthFailed("TSIG rejected by %s: %s (check [dns] tsig_key_name and "
                             "tsig_secret)" % (self.settings.server, type(exc).__name__),
                             backend=BACKEND) from exc
        except (dns.exception.Timeout, OSError, EOFError) as exc:
            raise BackendUnavailable("%s:%d unreachable: %s" % (self.settings.server,
                                     self.settings.port, exc or type(exc).__name__),
                                     backend=BACKEND) from exc
        return response

    def _query(self, name: dns.name.Name, rdtype: str) -> List[str]:
        query = dns.message.make_query(name, rdtype)
        if self.keyring is not None:
            query.use_tsig(self.keyring, keyname=self.keyname, algorithm=self.algorithm)
        response = self._call(query)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return []
        self._check(response, "query %s %s" % (name, rdtype))
        values = []  # type: List[str]
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                for rdata in rrset:
                    if rdtype == "TXT":
                        values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
                    else:
                        values.append(rdata.to_text())
        return values

    def _check(self, response: dns.message.Message, what: str) -> None:
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode in _TRANSIENT_RCODES:
            raise TransientError("%s: %s (another update raced us or the server failed)"
                                 % (what, text), backend=BACKEND)
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise AuthFailed("%s: %s (key not allowed to update, or the zone is not served "
                             "by %s)" % (what, text, self.settings.server), backend=BACKEND)
        if rcode == dns.rcode.NOTZONE:
            raise OutOfScope("%s: NOTZONE" % what, backend=BACKEND)
        raise PermanentError("%s: %s" % (what, text), backend=BACKEND)

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(zone, keyring=self.keyring, keyname=self.keyname,
                                        keyalgorithm=self.algorithm)

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        self._check(self._call(update), what)

    def _owner(self, name: dns.name.Name, instance_uuid: str) -> Optional[bool]:
        """True: ours; False: someone else's; None: nothing there."""
        txt = self._query(name, "TXT")
        if owner_marker(instance_uuid) in txt:
            return True
        if txt or self._query(name, "A") or self._query(name, "AAAA"):
            return False
        return None

    def register(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[Address]) -> Dict[str, Any]:
        name = self._name(fqdn)
        target = name.to_text()
        reverse = {a.address: self._reverse_zone(a.address) for a in addresses}
        owned = self._owner(name, instance_uuid)
        if owned is False:
            raise Conflict("%s already holds records not owned by instance %s"
                           % (fqdn, instance_uuid), backend=BACKEND)
        marker = '"%s"' % owner_marker(instance_uuid)
        old = self._query(name, "A") + self._query(name, "AAAA") if owned else []
        ttl = self.settings.ttl
        forward = self._update(self.zone)
        if owned:
            forward.present(name, "TXT", marker)
        else:
            for rdtype in ("TXT", "A", "AAAA"):
                forward.absent(name, rdtype)
        forward.replace(name, ttl, "TXT", marker)
        for version, rdtype in ((4, "A"), (6, "AAAA")):
            values = [a.address for a in addresses if a.version == version]
            if values:
                forward.replace(name, ttl, rdtype, *values)
            else:
                forward.delete(name, rdtype)
        self._send(forward, "update %s" % fqdn)
        by_zone = {}  # type: Dict[dns.name.Name, dns.update.UpdateMessage]
        for ptr, zone in reverse.values():
            by_zone.setdefault(zone, self._update(zone)).replace(ptr, ttl, "PTR", target)
        for stale in set(old) - set(reverse):
            try:
                ptr, zone = self._reverse_zone(stale)
            except OutOfScope:
                continue
            by_zone.setdefault(zone, self._update(zone)).delete(ptr, "PTR", target)
        for zone, update in by_zone.items():
            self._send(update, "update reverse zone %s" % zone)
        return {"fqdn": fqdn, "addresses": sorted(reverse),
                "removed": sorted(set(old) - set(reverse))}

    def deregister(self, fqdn: str, instance_uuid: str,
                   addresses: Sequence[Address]) -> Dict[str, Any]:
        name = self._name(fqdn)
        target = name.to_text()
        owned = self._owner(name, instance_uuid)
        if owned is False:
            # The name belongs to another instance or a person: its PTRs are theirs too.
            return {"fqdn": fqdn, "forward_removed": False, "ptr_checked": []}
        known = {a.address for a in addresses}
        if owned:
            known.update(self._query(name, "A") + self._query(name, "AAAA"))
            forward = self._update(self.zone)
            forward.present(name, "TXT", '"%s"' % owner_marker(instance_uuid))
            forward.delete(name, "A")
            forward.delete(name, "AAAA")
            forward.delete(name, "TXT", '"%s"' % owner_marker(instance_uuid))
            self._send(forward, "delete %s" % fqdn)
        by_zone = {}  # type: Dict[dns.name.Name, dns.update.UpdateMessage]
        for address in known:
            try:
                ptr, zone = self._reverse_zone(address)
            except OutOfScope:
                continue
            by_zone.setdefault(zone, self._update(zone)).delete(ptr, "PTR", target)
        for zone, update in by_zone.items():
            self._send(update, "delete in reverse zone %s" % zone)
        return {"fqdn": fqdn, "forward_removed": bool(owned), "ptr_checked": sorted(known)}

    def describe(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[str]) -> Dict[str, Any]:
        name = self._name(fqdn)
        ptrs = {}  # type: Dict[str, List[str]]
        for address in addresses:
            try:
                reverse, _ = self._reverse_zone(address)
            except OutOfScope:
                ptrs[address] = []  # no zone of ours could hold it
                continue
            ptrs[address] = self._query(reverse, "PTR")
        return {"A": self._query(name, "A"), "AAAA": self._query(name, "AAAA"),
                "owned": owner_marker(instance_uuid) in self._query(name, "TXT"), "PTR": ptrs}

    def check(self) -> str:
        """A (TSIG-signed) SOA query of every zone: proves reachability, key and zones."""
        by_prefix = [dns.name.from_text(z) for _, z in self.reverse_prefixes]
        for zone in [self.zone] + self.reverse_zones + \
                [z for z in dict.fromkeys(by_prefix) if z not in self.reverse_zones]:
            if not self._query(zone, "SOA"):
                raise OutOfScope("%s does not serve zone %s" % (self.settings.server, zone),
                                 backend=BACKEND)
        return "%s:%d serves %s and %d reverse zone(s), %s" % (
            self.settings.server, self.settings.port, self.zone, len(self.reverse_zones),
            "TSIG key %s accepted" % self.keyname if self.keyring is not None
            else "updates UNSIGNED (allow_unsigned)")
