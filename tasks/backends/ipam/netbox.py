"""NetBox as IPAM: one IPAddress per fixed address, in the prefix that contains it.

What the last run recorded (ids, prefixes, name) is in the ledger, handed in as
``known``: only addresses the ledger does not know are looked up (one read for
all of them, to find another holder before anything is written), and every
write is one list request (NetBox runs it in one transaction). Prefixes are
read once per process and again when an address falls outside all of them or
after PREFIXES_FOR seconds.
"""

import ipaddress
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from novahooks.event import Address
from tasks.backends.ipam.base import IpamDriver, IpamEnsured, IpamHeld, IpamReleased
from tasks.backends.netbox import client
from tasks.backends.netbox.watch import PrefixWatch
from tasks.errors import Conflict, OutOfScope, TransientError

BACKEND = "ipam"
#: How long a process trusts its copy of NetBox's prefixes: a prefix an operator
#: resizes is seen this much later (a new prefix at once, on its first address).
PREFIXES_FOR = 300.0

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class NetBoxIpam(IpamDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.api = client.connect(settings, BACKEND)
        self._fields_ready = False
        self._prefixes: List[Network] = []
        self._prefixes_at = 0.0
        self._watch = PrefixWatch(self.api.ipam.ip_addresses, settings.preflight_watch) \
            if settings.preflight_watch else None

    def _ready(self) -> None:
        if not self._fields_ready:
            client.ensure_custom_fields(self.api)
            self._fields_ready = True

    def _load_prefixes(self) -> None:
        self._prefixes = sorted((ipaddress.ip_network(str(p.prefix))
                                 for p in self.api.ipam.prefixes.all()),
                                key=lambda n: -n.prefixlen)
        self._prefixes_at = time.monotonic()

    def _cidr(self, address: str) -> str:
        ip = ipaddress.ip_address(address)
        if time.monotonic() - self._prefixes_at > PREFIXES_FOR:
            self._load_prefixes()
        for attempt in range(2):
            longest = next((n for n in self._prefixes if n.version == ip.version and ip in n),
                           None)
            if longest is not None:
                return "%s/%d" % (address, longest.prefixlen)
            if attempt == 0:
                self._load_prefixes()
        raise OutOfScope("address %s is in no prefix known to NetBox" % address,
                         backend=BACKEND)

    def prefix_of(self, address: str) -> Optional[Network]:
        try:
            with client.translated(BACKEND, self.settings.url):
                return ipaddress.ip_interface(self._cidr(address)).network
        except OutOfScope:
            return None  # preflight() and ensure() refuse it, naming NetBox

    def mine(self, instance_uuid: str) -> Dict[str, Any]:
        return {client.host(ip.address): ip
                for ip in client.owned_by(self.api.ipam.ip_addresses, instance_uuid)}

    def _held(self, instance_uuid: str,
              known: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Tuple[int, str, str]], bool]:
        """address -> (id, address with prefix, DNS name); True when from the ledger.

        ``{}``: the ledger has no note, so nothing was made (a run whose note was lost
        shows up as a duplicate when it creates, and is read then); None: no ledger.
        """
        if known is not None and not known:
            return {}, True
        if known and isinstance(known.get("ids"), dict) and known.get("netbox") == \
                self.settings.url:
            return {a: (int(i), known["cidrs"][a], known.get("fqdn") or "")
                    for a, i in known["ids"].items()}, True
        return {a: (int(ip.id), str(ip.address), ip.dns_name or "")
                for a, ip in self.mine(instance_uuid).items()}, False

    def _owned(self, instance_uuid: str,
               addresses: Sequence[str]) -> Dict[str, Tuple[int, str, str]]:
        """Which of ``addresses`` NetBox records for the instance, in one read; a record of
        any other holder is a Conflict."""
        owned: Dict[str, Tuple[int, str, str]] = {}
        if not addresses:
            return owned
        for other in self.api.ipam.ip_addresses.filter(address=list(addresses)):
            owner = (other.custom_fields or {}).get(client.UUID_FIELD)
            address = client.host(other.address)
            if owner != instance_uuid:
                raise Conflict("address %s is already recorded in NetBox (id %s) for %s"
                               % (address, other.id, "instance %s" % owner if owner else
                                  "something not managed by novahooks"), backend=BACKEND)
            owned.setdefault(address, (int(other.id), str(other.address), other.dns_name or ""))
        return owned

    def preflight(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address]) -> None:
        """Each address in a prefix (the process's copy) and held by no one else: the one
        read ``ensure`` makes for addresses the ledger does not know. No custom-field
        setup either (a write): without the field no record is the instance's.

        With ``[ipam] preflight_watch`` set, an address the process's copy of its prefix
        vouches for is not read (tasks/backends/netbox/watch.py)."""
        with client.translated(BACKEND, self.settings.url):
            unsure = []
            for item in addresses:
                prefix = str(ipaddress.ip_interface(self._cidr(item.address)).network)
                if self._watch is None or not self._watch.free(item.address, prefix):
                    unsure.append(item.address)
            self._owned(instance_uuid, unsure)

    def ensure(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address],
               known: Optional[Dict[str, Any]] = None) -> IpamEnsured:
        client.take_request_ids(self.api)  # what an earlier call left is not this one's
        result = self._ensure_known(instance_uuid, fqdn, addresses, known)
        result["netbox_request_ids"] = client.take_request_ids(self.api)
        return result

    def _ensure_known(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address],
                      known: Optional[Dict[str, Any]]) -> IpamEnsured:
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            held, from_ledger = self._held(instance_uuid, known)
            try:
                return self._ensure(instance_uuid, fqdn, addresses, held)
            except client.Stale as exc:
                if not from_ledger:
                    raise TransientError("addresses of %s changed in NetBox while they were "
                                         "written: %s" % (instance_uuid, exc),
                                         backend=BACKEND) from exc
            held, _ = self._held(instance_uuid, None)
            try:
                return self._ensure(instance_uuid, fqdn, addresses, held)
            except client.Stale as exc:
                raise TransientError("addresses of %s changed in NetBox while they were "
                                     "written: %s" % (instance_uuid, exc),
                                     backend=BACKEND) from exc

    def ensure_with(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address],
                    known: Optional[Dict[str, Any]]) -> IpamEnsured:
        return self.ensure(instance_uuid, fqdn, addresses, known)

    def release_with(self, instance_uuid: str,
                     known: Optional[Dict[str, Any]]) -> IpamReleased:
        return self.release(instance_uuid, known)

    def _ensure(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address],
                held: Dict[str, Tuple[int, str, str]]) -> IpamEnsured:
        held = dict(held)
        plan = [(item.address, self._cidr(item.address)) for item in addresses]
        for address, found in self._owned(
                instance_uuid, [address for address, _ in plan if address not in held]).items():
            held.setdefault(address, found)
        create, change, created, updated = [], [], [], []
        ids, cidrs = {}, {}
        for address, cidr in plan:
            record = held.pop(address, None)
            cidrs[address] = cidr
            if record is None:
                create.append({"address": cidr, "status": "active", "dns_name": fqdn,
                               "description": "Nova instance %s" % instance_uuid,
                               "custom_fields": {client.UUID_FIELD: instance_uuid}})
                created.append(address)
                continue
            ids[address] = record[0]
            if record[1] != cidr or record[2] != fqdn:
                change.append({"id": record[0], "address": cidr, "dns_name": fqdn})
                updated.append(address)
        endpoint = self.api.ipam.ip_addresses
        with client.stale_if_refused():
            if held:
                endpoint.delete([record[0] for record in held.values()])
            if change:
                endpoint.update(change)
            if create:
                for made in endpoint.create(create):
                    ids[client.host(made.address)] = int(made.id)
        return {"created": created, "updated": updated, "released": sorted(held),
                "ids": ids, "cidrs": cidrs, "fqdn": fqdn, "netbox": self.settings.url}

    def release(self, instance_uuid: str,
                known: Optional[Dict[str, Any]] = None) -> IpamReleased:
        """One read (by the ledger's ids when it has them) and one list delete, if any is left.

        Deleting a NetBox VM deletes the addresses on its interfaces too, so when
        inventory is this NetBox the read usually finds nothing left to delete.
        """
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            held, from_ledger = self._held(instance_uuid, known)
            if from_ledger and held:
                present = {client.host(ip.address): int(ip.id) for ip in
                           self.api.ipam.ip_addresses.filter(id=[r[0] for r in held.values()])
                           if (ip.custom_fields or {}).get(client.UUID_FIELD) == instance_uuid}
            else:  # read just now (or nothing to read)
                present = {address: record[0] for address, record in held.items()}
            if present:
                try:
                    with client.stale_if_refused():
                        self.api.ipam.ip_addresses.delete(list(present.values()))
                except client.Stale as exc:
                    raise TransientError("addresses of %s changed in NetBox while they were "
                                         "released: %s" % (instance_uuid, exc),
                                         backend=BACKEND) from exc
        # What the note held and NetBox no longer has went with its VM (or by hand).
        return {"released": sorted(present), "already_gone": sorted(set(held) - set(present))}

    def describe(self, instance_uuid: str) -> IpamHeld:
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            mine = self.mine(instance_uuid)
            return {"addresses": sorted(str(ip.address) for ip in mine.values())}

    def check(self) -> str:
        return client.check(self.api, BACKEND, self.settings.url)

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held: Dict[str, Dict[str, Any]] = {}
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            for ip in client.managed(self.api.ipam.ip_addresses):
                uuid = ip.custom_fields[client.UUID_FIELD]
                entry = held.setdefault(uuid, {"addresses": [], "dns_name": ip.dns_name})
                entry["addresses"].append(client.host(ip.address))
        return held
