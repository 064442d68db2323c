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
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import dns.exception
import dns.flags
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
from tasks.backends.dns.base import DnsDeregistered, DnsDriver, DnsHeld, DnsRegistered, owner_marker
from tasks.policy import reverse_zone
from tasks.errors import (AuthFailed, BackendUnavailable, Conflict, Misconfigured, OutOfScope,
                          PermanentError, TransientError)

BACKEND = "dns"
LOG = logging.getLogger("novahooks.dns")
#: What a server that does not answer ANY is asked instead, one type at a time.
_TYPES = ("A", "AAAA", "TXT", "CNAME", "MX", "NS", "SRV", "PTR", "DNAME", "CAA", "NAPTR",
          "HINFO", "SSHFP", "TLSA")
#: Seconds the zone's NS and MX targets are trusted before they are read again.
_INFRA_FOR = 300.0
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
        self._infra = {}  # type: Dict[str, str]
        self._infra_at = -_INFRA_FOR
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
        except (dns.tsig.PeerBadTime, dns.tsig.BadTime) as exc:
            # TSIG signs the time: clocks more than the fudge (300 s) apart fail every
            # update until NTP mends them, a fault of the clock, not of the key
            raise BackendUnavailable(
                "TSIG rejected by %s: %s: this host's clock (%s UTC) and the DNS server's "
                "differ by more than the TSIG fudge (300 s): check NTP on both"
                % (self.settings.server, type(exc).__name__,
                   time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())), backend=BACKEND) from exc
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature,
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

    def _holdings(self, name: dns.name.Name) -> Tuple[Dict[str, List[str]], Optional[str]]:
        """Every RRset at ``name`` (type -> values, TXT as text), and the zone cut (a
        delegation to other servers) ``name`` is at or below, if any."""
        query = dns.message.make_query(name, "ANY")
        if self.keyring is not None:
            query.use_tsig(self.keyring, keyname=self.keyname, algorithm=self.algorithm)
        response = self._call(query)
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return self._holdings_by_type(name)  # a server that does not answer ANY
        cut = self._cut(response)
        if cut is not None or response.rcode() == dns.rcode.NXDOMAIN:
            return {}, cut
        return self._rrsets(response, name), None

    def _holdings_by_type(self, name: dns.name.Name) -> Tuple[Dict[str, List[str]],
                                                               Optional[str]]:
        held = {}  # type: Dict[str, List[str]]
        for rdtype in _TYPES:
            query = dns.message.make_query(name, rdtype)
            if self.keyring is not None:
                query.use_tsig(self.keyring, keyname=self.keyname, algorithm=self.algorithm)
            response = self._call(query)
            cut = self._cut(response)
            if cut is not None:
                return {}, cut
            if response.rcode() == dns.rcode.NXDOMAIN:
                return {}, None
            self._check(response, "query %s %s" % (name, rdtype))
            for rdtype_, values in self._rrsets(response, name).items():
                held.setdefault(rdtype_, []).extend(values)
        return held, None

    def _cut(self, response: dns.message.Message) -> Optional[str]:
        """The delegation named by a referral: not authoritative, NS below our zone apex."""
        if response.flags & dns.flags.AA:
            return None
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.NS and rrset.name != self.zone:
                return rrset.name.to_text()
        return None

    @staticmethod
    def _rrsets(response: dns.message.Message, name: dns.name.Name) -> Dict[str, List[str]]:
        held = {}  # type: Dict[str, List[str]]
        for rrset in response.answer:
            if rrset.name != name or rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            values = held.setdefault(dns.rdatatype.to_text(rrset.rdtype), [])
            for rdata in rrset:
                values.append(b"".join(rdata.strings).decode("utf-8", "replace")
                              if rrset.rdtype == dns.rdatatype.TXT else rdata.to_text())
        return held

    def _infrastructure(self) -> Dict[str, str]:
        """The zone's NS and MX targets (name -> which), as the server holds them now."""
        if time.monotonic() - self._infra_at > _INFRA_FOR:
            names = {}  # type: Dict[str, str]
            for rdtype in ("NS", "MX"):
                for value in self._query(self.zone, rdtype):
                    target = value.split()[-1].rstrip(".").lower()
                    names[target] = "%s target of %s" % (rdtype, self.zone.to_text())
            self._infra, self._infra_at = names, time.monotonic()
        return self._infra

    def _forward_owner(self, name: dns.name.Name, instance_uuid: str) -> Optional[bool]:
        """True: ours; False: another's (any RRset: TXT, MX, NS, CNAME, SRV ...); None: free.

        A name at or below a delegation is a Conflict: what we wrote there is hidden
        by the cut, and a delete could never see it again."""
        held, cut = self._holdings(name)
        if cut is not None:
            raise Conflict("%s is at or below the delegation %s; its records would be hidden "
                           "by the zone cut" % (name, cut), backend=BACKEND)
        if owner_marker(instance_uuid) in held.get("TXT", []):
            return True
        return False if held else None

    def _reverse_owner(self, ptr: dns.name.Name, instance_uuid: str, target: str) -> str:
        """ours (our marker), legacy (only a PTR to our name, from before markers), new
        (nothing there) or foreign."""
        held, cut = self._holdings(ptr)
        if cut is not None:
            return "foreign"
        if owner_marker(instance_uuid) in held.get("TXT", []):
            return "ours"
        if not held:
            return "new"
        if set(held) == {"PTR"} and held["PTR"] == [target]:
            return "legacy"
        return "foreign"

    def _plan(self, fqdn: str, instance_uuid: str,
              addresses: Sequence[Address]) -> Tuple[dns.name.Name, Optional[bool],
                                                     Dict[str, Tuple[Any, Any, str]]]:
        """(name, forward owned, address -> (PTR name, zone, state)), or the error that
        refuses the registration; reads only."""
        name = self._name(fqdn)
        target = name.to_text()
        DnsDriver.preflight(self, fqdn, instance_uuid, addresses)
        infrastructure = self._infrastructure().get(fqdn.rstrip(".").lower())
        if infrastructure is not None:
            raise Conflict("%s is the zone's %s" % (fqdn, infrastructure), backend=BACKEND)
        zones = {a.address: self._reverse_zone(a.address) for a in addresses}
        owned = self._forward_owner(name, instance_uuid)
        if owned is False:
            raise Conflict("%s already holds records not owned by instance %s"
                           % (fqdn, instance_uuid), backend=BACKEND)
        reverse = {}
        for address, (ptr, zone) in zones.items():
            state = self._reverse_owner(ptr, instance_uuid, target)
            if state == "foreign":
                raise Conflict("the reverse name of %s (%s) holds records not owned by "
                               "instance %s" % (address, ptr, instance_uuid), backend=BACKEND)
            reverse[address] = (ptr, zone, state)
        return name, owned, reverse

    def preflight(self, fqdn: str, instance_uuid: str, addresses: Sequence[Address]) -> None:
        self._plan(fqdn, instance_uuid, addresses)

    def register(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[Address]) -> DnsRegistered:
        name, owned, reverse = self._plan(fqdn, instance_uuid, addresses)
        target = name.to_text()
        marker = '"%s"' % owner_marker(instance_uuid)
        old = self._query(name, "A") + self._query(name, "AAAA") if owned else []
        ttl = self.settings.ttl
        forward = self._update(self.zone)
        if owned:
            forward.present(name, "TXT", marker)
        else:
            forward.absent(name)  # no RRset of any type: the server checks it too
        forward.replace(name, ttl, "TXT", marker)
        for version, rdtype in ((4, "A"), (6, "AAAA")):
            values = [a.address for a in addresses if a.version == version]
            if values:
                forward.replace(name, ttl, rdtype, *values)
            else:
                forward.delete(name, rdtype)
        self._send(forward, "update %s" % fqdn)
        by_zone = {}  # type: Dict[dns.name.Name, dns.update.UpdateMessage]
        for ptr, zone, state in reverse.values():
            update = by_zone.setdefault(zone, self._update(zone))
            if state == "ours":
                update.present(ptr, "TXT", marker)
            elif state == "legacy":
                update.present(ptr, "PTR", target)
            else:
                update.absent(ptr)
            update.replace(ptr, ttl, "PTR", target)
            update.replace(ptr, ttl, "TXT", marker)
        kept = []  # type: List[str]
        for stale in set(old) - set(reverse):
            if not self._release_ptr(stale, instance_uuid, target, by_zone):
                kept.append(stale)
        for zone, update in by_zone.items():
            self._send(update, "update reverse zone %s" % zone)
        return {"fqdn": fqdn, "addresses": sorted(reverse),
                "removed": sorted(set(old) - set(reverse) - set(kept)),
                "soa_serials": self._serials([self.zone] + list(by_zone))}

    def _serials(self, zones: Sequence[dns.name.Name]) -> Dict[str, int]:
        """Each updated zone's SOA serial right after the update: the zone's own history
        (its journal, IXFR) names the change by it, so the audit record can too."""
        serials = {}  # type: Dict[str, int]
        for zone in zones:
            for value in self._query(zone, "SOA"):
                serials[zone.to_text()] = int(value.split()[2])
        return serials

    def _release_ptr(self, address: str, instance_uuid: str, target: str,
                     by_zone: Dict[dns.name.Name, dns.update.UpdateMessage]) -> bool:
        """Queue the removal of ``address``'s PTR if it is ours; False if it is not."""
        try:
            ptr, zone = self._reverse_zone(address)
        except OutOfScope:
            return False
        state = self._reverse_owner(ptr, instance_uuid, target)
        if state not in ("ours", "legacy"):
            return False
        marker = '"%s"' % owner_marker(instance_uuid)
        update = by_zone.setdefault(zone, self._update(zone))
        if state == "ours":
            update.present(ptr, "TXT", marker)
            update.delete(ptr, "TXT", marker)
        else:
            update.present(ptr, "PTR", target)
        update.delete(ptr, "PTR", target)
        return True

    def deregister(self, fqdn: str, instance_uuid: str,
                   addresses: Sequence[Address]) -> DnsDeregistered:
        name = self._name(fqdn)
        target = name.to_text()
        try:
            owned = self._forward_owner(name, instance_uuid)
        except Conflict:
            owned = None  # below a zone cut nothing of ours can be seen (nor removed)
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
        removed = []
        for address in sorted(known):
            if owned is False:
                # Another's name: only a PTR carrying our own marker is ours.
                try:
                    ptr, _ = self._reverse_zone(address)
                except OutOfScope:
                    continue
                if self._reverse_owner(ptr, instance_uuid, target) != "ours":
                    continue
            if self._release_ptr(address, instance_uuid, target, by_zone):
                removed.append(address)
        for zone, update in by_zone.items():
            self._send(update, "delete in reverse zone %s" % zone)
        return {"fqdn": fqdn, "forward_removed": bool(owned), "ptr_checked": sorted(known),
                "ptr_removed": removed}

    def describe(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[str]) -> DnsHeld:
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
