"""Infoblox as IPAM: one host record per instance, kept out of DNS, tagged with its UUID.

Neutron has already chosen the addresses, so ``ensure`` records exactly those:
a ``record:host`` with ``configure_for_dns: false`` whose ``ipv4addrs`` and
``ipv6addrs`` are the instance's fixed addresses and whose extensible attribute
``Nova Instance UUID`` names the instance. One object per instance means one
WAPI write per change, so a refused address leaves nothing half-written; the
DNS driver's A/AAAA/PTR records are separate objects with the same tag.

``allocate`` is for sites where Infoblox picks the address instead
(``func:nextavailableip``): the grid reserves it atomically in the same write.
"""

import ipaddress
from typing import Any, Dict, List, Sequence, Set

from novahooks.event import Address
from tasks.backends.infoblox import client
from tasks.backends.ipam.base import IpamDriver, IpamEnsured, IpamHeld, IpamReleased
from tasks.errors import Conflict, OutOfScope

BACKEND = "ipam"
HOST_FIELDS = ["name", "ipv4addrs", "ipv6addrs", "extattrs"]


def _addresses(host: Dict[str, Any]) -> List[str]:
    return ([entry["ipv4addr"] for entry in host.get("ipv4addrs") or []] +
            [entry["ipv6addr"] for entry in host.get("ipv6addrs") or []])


class InfobloxIpam(IpamDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.wapi = client.Wapi(settings, BACKEND)
        self.view = settings.network_view

    def _hosts(self, instance_uuid: str) -> List[Dict[str, Any]]:
        """This instance's host records, oldest reference first; checked again on our side."""
        return self._own(instance_uuid, self.wapi.search(
            "record:host", HOST_FIELDS, network_view=self.view,
            **{"*" + client.UUID_ATTR: instance_uuid}))

    @staticmethod
    def _own(instance_uuid: str, found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return sorted((host for host in found if client.owner(host) == instance_uuid),
                      key=lambda host: host["_ref"])

    def _survey(self, instance_uuid: str, fqdn: str, addresses: Sequence[str],
                own: bool) -> List[Dict[str, Any]]:
        """Everything a write of these addresses depends on, in one round trip: with
        ``own``, the instance's host records (returned); the network of each address (in
        none: OutOfScope); host records of anybody else holding the name or an address
        (Conflict). Without ``own`` no search names the UUID attribute, which may not be
        defined yet (defining it is a write)."""
        queries: List[client.Query] = []
        if own:
            queries.append(("record:host", HOST_FIELDS,
                            {"network_view": self.view, "*" + client.UUID_ATTR: instance_uuid}))
        for address in addresses:
            objtype = "network" if ipaddress.ip_address(address).version == 4 \
                else "ipv6network"
            queries.append((objtype, ["network"],
                            {"network_view": self.view, "contains_address": address}))
        checks = [("name", fqdn, "name %s" % fqdn)] + [
            ("ipv%daddr" % ipaddress.ip_address(a).version, a, "address %s" % a)
            for a in addresses]
        queries.extend(("record:host", ["name", "extattrs"],
                        {"network_view": self.view, field: value})
                       for field, value, _ in checks)
        answers = self.wapi.searches(queries)
        hosts = self._own(instance_uuid, answers.pop(0)) if own else []
        for address, networks in zip(addresses, answers):
            if not networks:
                raise OutOfScope("address %s is in no network of Infoblox network view %s"
                                 % (address, self.view), backend=BACKEND)
        for (_, _, what), found in zip(checks, answers[len(addresses):]):
            for other in found:
                holder = client.owner(other)
                if holder != instance_uuid:
                    raise Conflict("%s is already recorded in Infoblox (%s) for %s" % (
                        what, other["name"], "instance %s" % holder if holder else
                        "something not managed by novahooks"), backend=BACKEND)
        return hosts

    def _body(self, fqdn: str, addresses: Sequence[str]) -> Dict[str, Any]:
        return {"name": fqdn,
                "ipv4addrs": [{"ipv4addr": a, "configure_for_dhcp": False}
                              for a in addresses if ipaddress.ip_address(a).version == 4],
                "ipv6addrs": [{"ipv6addr": a, "configure_for_dhcp": False}
                              for a in addresses if ipaddress.ip_address(a).version == 6]}

    def _create(self, instance_uuid: str, body: Dict[str, Any],
                fields: Sequence[str] = ()) -> Any:
        body = dict(body, configure_for_dns=False, network_view=self.view,
                    comment="Nova instance %s" % instance_uuid,
                    extattrs=client.extattrs(instance_uuid))
        return self.wapi.create("record:host", body, raced="host record %s" % body["name"],
                                fields=list(fields))

    def preflight(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address]) -> None:
        """The searches ``ensure`` makes before writing (networks, the name and addresses
        in other host records), in one round trip, without defining the UUID attribute
        (a write): a record without it is no instance's. This instance's own host record
        is no conflict."""
        self._survey(instance_uuid, fqdn, [item.address for item in addresses], own=False)

    def ensure(self, instance_uuid: str, fqdn: str,
               addresses: Sequence[Address]) -> IpamEnsured:
        """One round trip of searches (``_survey``), then at most one write."""
        self.wapi.ensure_uuid_attribute()
        wanted = [item.address for item in addresses]
        hosts = self._survey(instance_uuid, fqdn, wanted, own=True)
        held: Set[str] = set()
        for host in hosts:
            held.update(_addresses(host))
        created = sorted(set(wanted) - held)
        released = sorted(held - set(wanted))
        if not wanted:
            for host in hosts:
                self.wapi.delete(host["_ref"])
            return {"created": [], "updated": [], "released": released}
        body = self._body(fqdn, wanted)
        updated: List[str] = []
        if not hosts:
            self._create(instance_uuid, body)
        else:
            keep = hosts[0]
            if keep["name"] != fqdn or sorted(_addresses(keep)) != sorted(wanted):
                self.wapi.update(keep["_ref"], body)
                updated = sorted(set(wanted) & held)
            for extra in hosts[1:]:  # two workers raced on the first create
                self.wapi.delete(extra["_ref"])
        return {"created": created, "updated": updated, "released": released}

    def allocate(self, instance_uuid: str, fqdn: str, network: str) -> str:
        """Reserve the next free IPv4 address of ``network`` for the instance; return it.

        Not idempotent by nature: each call takes another address, so the caller
        records what it got (and ``release`` frees everything the instance holds).
        """
        cidr = str(ipaddress.ip_network(network, strict=True))
        if not self.wapi.search("network", ["network"], network=cidr, network_view=self.view):
            raise OutOfScope("network %s is not in Infoblox network view %s"
                             % (cidr, self.view), backend=BACKEND)
        self.wapi.ensure_uuid_attribute()
        hosts = self._survey(instance_uuid, fqdn, [], own=True)
        before = set(_addresses(hosts[0])) if hosts else set()
        body = self._body(fqdn, sorted(before))
        body["ipv4addrs"].append({"ipv4addr": "func:nextavailableip:%s,%s" % (cidr, self.view),
                                  "configure_for_dhcp": False})
        if hosts:
            host = self.wapi.update(hosts[0]["_ref"], body, fields=HOST_FIELDS)
        else:
            host = self._create(instance_uuid, body, fields=HOST_FIELDS)
        (new,) = set(_addresses(host)) - before
        return new

    def release(self, instance_uuid: str) -> IpamReleased:
        released: Set[str] = set()
        for host in self._hosts(instance_uuid):
            self.wapi.delete(host["_ref"])
            released.update(_addresses(host))
        return {"released": sorted(released)}

    def describe(self, instance_uuid: str) -> IpamHeld:
        hosts = self._hosts(instance_uuid)
        return {"addresses": sorted(a for host in hosts for a in _addresses(host))}

    def check(self) -> str:
        self.wapi.check_view("networkview", self.view, "network view")
        self.wapi.ensure_uuid_attribute()
        return "Infoblox WAPI at %s, user %s accepted, network view %s" % (
            self.wapi.base, self.wapi.username, self.view)

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held: Dict[str, Dict[str, Any]] = {}
        for host in self.wapi.search_all("record:host", HOST_FIELDS, network_view=self.view,
                                         **{"*%s~" % client.UUID_ATTR: "."}):
            uuid = client.owner(host)
            if uuid:
                entry = held.setdefault(uuid, {"addresses": [], "dns_name": host["name"]})
                entry["addresses"].extend(_addresses(host))
        return held
