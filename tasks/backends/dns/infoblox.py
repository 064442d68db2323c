"""Infoblox as DNS: record:a, record:aaaa and record:ptr, each tagged with the instance UUID.

Separate records rather than a DNS host record: the IPAM driver already keeps
the instance's host record (out of DNS), and ownership is per record through
the extensible attribute ``Nova Instance UUID`` (the WAPI counterpart of the
RFC 2136 driver's TXT marker). A name held by a record without our tag is a
conflict, and so is a PTR at one of the VM's addresses that is not ours;
deregister deletes exactly the records carrying the tag, under whatever name
they had. Names must lie in [dns] zone and addresses in
[dns] reverse_zones, checked before the first write as the RFC 2136 driver
does; NIOS itself refuses a record whose zone it does not hold. A register is two
WAPI round trips (``request`` objects): every search, then every write as one
transaction.
"""

import ipaddress
from typing import Any, Dict, List, Sequence, Tuple

import dns.name

from novahooks.event import Address
from tasks.backends.dns.base import DnsDeregistered, DnsDriver, DnsHeld, DnsRegistered
from tasks.backends.dns.scope import Scope
from tasks.backends.infoblox import client
from tasks.errors import Conflict, Misconfigured, OutOfScope

BACKEND = "dns"
FORWARD = {4: ("record:a", "ipv4addr"), 6: ("record:aaaa", "ipv6addr")}
#: the record types an instance's tag is searched in, with their fields
TAGGED = (("record:a", ["name", "ipv4addr"]), ("record:aaaa", ["name", "ipv6addr"]),
          ("record:ptr", ["ptrdname", "ipv4addr", "ipv6addr"]))


def zone_cidr(zone: dns.name.Name) -> str:
    """A reverse zone as NIOS names it: ``10.in-addr.arpa`` is ``10.0.0.0/8``."""
    labels = [label.decode() for label in zone.relativize(dns.name.root).labels]
    if labels[-2:] == ["in-addr", "arpa"]:
        octets = list(reversed(labels[:-2]))
        return "%s/%d" % (".".join(octets + ["0"] * (4 - len(octets))), 8 * len(octets))
    if labels[-2:] == ["ip6", "arpa"]:
        nibbles = "".join(reversed(labels[:-2]))
        padded = (nibbles + "0" * 32)[:32]
        address = ipaddress.IPv6Address(int(padded, 16))
        return "%s/%d" % (address, 4 * len(nibbles))
    raise Misconfigured("[dns] reverse_zones: %s is not under in-addr.arpa or ip6.arpa" % zone,
                        backend=BACKEND)


def _address(record: Dict[str, Any]) -> str:
    return str(record.get("ipv4addr") or record.get("ipv6addr"))


class InfobloxDns(DnsDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.scope = Scope(settings, BACKEND)
        self.wapi = client.Wapi(settings, BACKEND)
        self.view = settings.view
        self.zone, self.reverse_zones = self.scope.zone, self.scope.reverse_zones
        for zone in self.reverse_zones:
            zone_cidr(zone)

    def _name(self, fqdn: str) -> str:
        return self.scope.name(fqdn).to_text(omit_final_dot=True).lower()

    def _reverse_zone(self, address: str) -> dns.name.Name:
        """The zone that puts ``address`` in scope: a ``[naming prefix]`` rule's first.

        NIOS itself files the PTR under the most specific reverse zone it holds for
        the address; ``check`` proves every zone named here exists in the view.
        """
        return self.scope.reverse_zone(address, self.reverse_prefixes)

    def _tag_queries(self, instance_uuid: str) -> List[client.Query]:
        """The searches for every A, AAAA and PTR record in the view with this instance's tag."""
        tag = {"*" + client.UUID_ATTR: instance_uuid, "view": self.view}
        return [(objtype, fields + ["extattrs"], tag) for objtype, fields in TAGGED]

    def _tagged(self, instance_uuid: str,
                answers: List[List[Dict[str, Any]]]) -> Dict[str, List[Dict[str, Any]]]:
        """The answers to ``_tag_queries``, by type, each checked again on our side."""
        return {objtype: [r for r in found if client.owner(r) == instance_uuid]
                for (objtype, _), found in zip(TAGGED, answers)}

    def _claim_queries(self, name: str,
                       wanted: Dict[str, int]) -> List[Tuple[str, client.Query]]:
        """The searches for anything at the name, and for PTRs at the addresses."""
        queries = [(objtype, (objtype, ["name", "extattrs"] + (
            ["configure_for_dns"] if objtype == "record:host" else []),
            {"name": name, "view": self.view}))
            for objtype in ("record:a", "record:aaaa", "record:cname", "record:host")]
        for address, version in sorted(wanted.items()):
            queries.append((address, ("record:ptr", ["ptrdname", "extattrs"],
                                      {"view": self.view, FORWARD[version][1]: address})))
        return queries

    def _claim(self, name: str, instance_uuid: str, claims: List[Tuple[str, client.Query]],
               answers: List[List[Dict[str, Any]]]) -> None:
        """Anything at the name without our tag (a person's record, another VM's) is a
        conflict; so is a PTR at an address without our tag (a router's, another VM's):
        a second record:ptr would make the reverse lookup answer two names, and the
        other holder's record must neither be overwritten nor deleted."""
        for (what, (objtype, _, _)), found in zip(claims, answers):
            for record in found:
                if objtype == "record:host" and not record.get("configure_for_dns", True):
                    continue  # an IPAM-only host record is not in DNS
                holder = client.owner(record)
                if holder == instance_uuid:
                    continue
                owner = "instance %s" % holder if holder else "not managed by novahooks"
                if objtype == "record:ptr":
                    raise Conflict("the PTR of %s already names %s, not owned by instance %s "
                                   "(%s)" % (what, record.get("ptrdname"), instance_uuid,
                                             owner), backend=BACKEND)
                raise Conflict("%s already holds a %s not owned by instance %s (%s)" % (
                    name, objtype, instance_uuid, owner), backend=BACKEND)

    def _plan(self, fqdn: str, instance_uuid: str, addresses: Sequence[Address],
              tagged: bool = False) -> Tuple[str, Dict[str, int], Dict[str, List[Any]]]:
        """Every refusal of :meth:`register`, reading the grid in one round trip and
        writing nothing: reserved names, scope, reverse zones, and the name and PTRs
        others hold; with ``tagged``, the same round trip also finds this instance's
        records (the UUID attribute must be defined by then)."""
        super().preflight(fqdn, instance_uuid, addresses)
        name = self._name(fqdn)
        wanted: Dict[str, int] = {a.address: ipaddress.ip_address(a.address).version
                                  for a in addresses}
        for address in wanted:
            self._reverse_zone(address)
        claims = self._claim_queries(name, wanted)
        queries = [query for _, query in claims] + (
            self._tag_queries(instance_uuid) if tagged else [])
        answers = self.wapi.searches(queries)
        self._claim(name, instance_uuid, claims, answers[:len(claims)])
        mine = self._tagged(instance_uuid, answers[len(claims):]) if tagged else {}
        return name, wanted, mine

    def preflight(self, fqdn: str, instance_uuid: str, addresses: Sequence[Address]) -> None:
        self._plan(fqdn, instance_uuid, addresses)

    def _record(self, instance_uuid: str, **fields: Any) -> Dict[str, Any]:
        return dict(fields, view=self.view, ttl=self.settings.ttl, use_ttl=True,
                    comment="Nova instance %s" % instance_uuid,
                    extattrs=client.extattrs(instance_uuid))

    def register(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[Address]) -> DnsRegistered:
        """Two round trips: the searches, then every create and delete as one request
        (one transaction: a refused record leaves none of the others written)."""
        self.wapi.ensure_uuid_attribute()
        name, wanted, mine = self._plan(fqdn, instance_uuid, addresses, tagged=True)
        forward = {(r["name"], _address(r)): r for objtype in FORWARD.values()
                   for r in mine[objtype[0]]}
        reverse = {(r["ptrdname"], _address(r)): r for r in mine["record:ptr"]}
        writes: List[client.Write] = []
        for address, version in sorted(wanted.items()):
            objtype, field = FORWARD[version]
            if (name, address) not in forward:
                writes.append(("POST", objtype, self._record(
                    instance_uuid, name=name, **{field: address})))
            if (name, address) not in reverse:
                writes.append(("POST", "record:ptr", self._record(
                    instance_uuid, ptrdname=name, **{field: address})))
        removed = self._delete_except(writes, forward, name, wanted)
        self._delete_except(writes, reverse, name, wanted)
        self.wapi.writes(writes, raced="records of %s" % name)
        return {"fqdn": fqdn, "addresses": sorted(wanted), "removed": removed}

    @staticmethod
    def _delete_except(writes: List[client.Write],
                       records: Dict[Tuple[str, str], Dict[str, Any]], name: str,
                       keep: Dict[str, int]) -> List[str]:
        gone = []
        for (owner_name, address), record in records.items():
            if owner_name != name or address not in keep:
                writes.append(("DELETE", record["_ref"], None))
                gone.append(address)
        return sorted(gone)

    def deregister(self, fqdn: str, instance_uuid: str,
                   addresses: Sequence[Address]) -> DnsDeregistered:
        """Two round trips: the tagged records, then one request deleting them all."""
        mine = self._tagged(instance_uuid, self.wapi.searches(self._tag_queries(instance_uuid)))
        removed = {}  # type: Dict[str, List[str]]
        self.wapi.writes([("DELETE", record["_ref"], None)
                          for records in mine.values() for record in records])
        for objtype, records in mine.items():
            removed[objtype] = sorted(_address(r) for r in records)
        forward = removed["record:a"] + removed["record:aaaa"]
        checked = {a.address for a in addresses} | set(forward) | set(removed["record:ptr"])
        return {"fqdn": fqdn, "forward_removed": bool(forward), "ptr_checked": sorted(checked),
                "ptr_removed": removed["record:ptr"]}

    def describe(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[str]) -> DnsHeld:
        name = self._name(fqdn)
        held = {}  # type: Dict[str, List[Dict[str, Any]]]
        for objtype, field in FORWARD.values():
            held[objtype] = self.wapi.search(objtype, ["name", field, "extattrs"], name=name,
                                             view=self.view)
        ptrs = {}  # type: Dict[str, List[str]]
        for address in addresses:
            field = FORWARD[ipaddress.ip_address(address).version][1]
            ptrs[address] = sorted(r["ptrdname"] for r in self.wapi.search(
                "record:ptr", ["ptrdname"], view=self.view, **{field: address}))
        forward = held["record:a"] + held["record:aaaa"]
        return {"A": sorted(r["ipv4addr"] for r in held["record:a"]),
                "AAAA": sorted(r["ipv6addr"] for r in held["record:aaaa"]),
                "owned": bool(forward) and all(client.owner(r) == instance_uuid
                                               for r in forward),
                "PTR": ptrs}

    def check(self) -> str:
        """The view and every configured zone exist in the grid, and the user may read them."""
        self.wapi.check_view("view", self.view, "DNS view")
        by_prefix = [dns.name.from_text(z) for _, z in self.reverse_prefixes]
        zones = [(self.zone.to_text(omit_final_dot=True), self.zone.to_text())] + [
            (zone_cidr(zone), zone.to_text()) for zone in dict.fromkeys(
                self.reverse_zones + by_prefix)]
        for fqdn, shown in zones:
            if not self.wapi.search("zone_auth", ["fqdn"], fqdn=fqdn, view=self.view):
                raise OutOfScope("Infoblox at %s has no authoritative zone %s in view %s"
                                 % (self.wapi.base, shown, self.view), backend=BACKEND)
        self.wapi.ensure_uuid_attribute()
        return "Infoblox WAPI at %s, user %s accepted, view %s serves %s and %d reverse zone(s)" % (
            self.wapi.base, self.wapi.username, self.view, self.zone, len(zones) - 1)
