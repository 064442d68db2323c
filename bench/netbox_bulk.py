"""NetBox's own rate for a VM's writes in bulk against the drivers one VM at a time.

Issue 14 asks batching to reach 0.8 x what NetBox itself does with the same writes
sent as list requests, without Celery (``netbox_alone_vm_per_s``): the physical
limit on this machine. This measures that limit and, side by side against the
same NetBox in the same run, the current drivers called the way the steps call
them, VM after VM (build, then delete, with the ledger's notes and the build
chain's IPAM preflight: bench/netbox_calls.py's ``notifications`` path), also
without Celery: the most the per-call path can give before any queueing.

A bulk round writes ``--batch`` VMs with one list request per kind of write,
in the order the steps write them: the VMs (POST), their addresses (POST), their
interfaces with MACs (POST), the addresses assigned to the interfaces (PATCH),
the VMs' status and primary IPs (PATCH); then deletes the VMs (DELETE, which
takes interfaces, MACs and addresses with it). Before writing, one read for all
the batch's addresses, the "held by another?" check the IPAM driver makes. Rounds
alternate (per call, bulk, bulk, per call, ...) so that load on the 2 cores falls
on both alike.

    .venv/bin/python bench/netbox_bulk.py --batch 50 --rounds 4
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import arguments, at_least, log, machine, ratio, save, table  # noqa: E402
from bench.netbox_calls import Counter, Steps, lifecycle  # noqa: E402


def _drivers(url: str, token: str) -> Any:
    from novahooks.settings import load_settings
    from tasks.backends.inventory.netbox import NetBoxInventory
    from tasks.backends.ipam.netbox import NetBoxIpam
    settings = load_settings("/dev/null", {
        "NOVAHOOKS_IPAM_URL": url, "NOVAHOOKS_IPAM_TOKEN": token,
        "NOVAHOOKS_INVENTORY_URL": url, "NOVAHOOKS_INVENTORY_TOKEN": token})
    return NetBoxIpam(settings.ipam), NetBoxInventory(settings.inventory)


def per_call_round(ipam: Any, inventory: Any, first: int, count: int) -> float:
    """Seconds for ``count`` VMs' build and delete through the drivers, one VM at a time."""
    started = time.perf_counter()
    for n in range(first, first + count):
        steps = Steps(ipam, inventory, True)
        for call in lifecycle("notifications", n):
            call(steps)
    return time.perf_counter() - started


def bulk_round(api: Any, cluster: int, first: int, count: int, octet: int = 100) -> float:
    """Seconds for the same writes of ``count`` VMs as one list request per kind; their
    addresses from 10.20.<octet>.x up."""
    from tasks.backends.netbox.client import UUID_FIELD
    vms = [lifecycle_event(n, octet) for n in range(first, first + count)]
    started = time.perf_counter()
    addresses = [vm["address"] for vm in vms]
    held = list(api.ipam.ip_addresses.filter(address=addresses))
    if held:
        raise RuntimeError("bulk round %d: %d addresses already held" % (first, len(held)))
    made = api.virtualization.virtual_machines.create([
        {"name": vm["name"], "cluster": cluster, "status": "active", "vcpus": 1,
         "memory": 2048, "disk": 20000, "custom_fields": {UUID_FIELD: vm["uuid"]}}
        for vm in vms])
    ips = api.ipam.ip_addresses.create([
        {"address": vm["address"] + "/16", "status": "active", "dns_name": vm["name"],
         "custom_fields": {UUID_FIELD: vm["uuid"]}} for vm in vms])
    ifaces = api.virtualization.interfaces.create([
        {"virtual_machine": int(vm.id), "name": "private", "mac_address": spec["mac"]}
        for vm, spec in zip(made, vms)])
    api.ipam.ip_addresses.update([
        {"id": int(ip.id), "assigned_object_type": "virtualization.vminterface",
         "assigned_object_id": int(iface.id)} for ip, iface in zip(ips, ifaces)])
    api.virtualization.virtual_machines.update([
        {"id": int(vm.id), "primary_ip4": int(ip.id)} for vm, ip in zip(made, ips)])
    api.virtualization.virtual_machines.delete([int(vm.id) for vm in made])
    return time.perf_counter() - started


def lifecycle_event(n: int, octet: int = 100) -> Dict[str, str]:
    """A VM of the bulk rounds: its own range of addresses and MACs, apart from the
    per-call rounds' (bench/netbox_calls.py lifecycle)."""
    return {"uuid": "00000000-0000-4000-9000-%012d" % n, "name": "bulk-%d" % n,
            "address": "10.20.%d.%d" % (octet + n // 200, n % 200 + 2),
            "mac": "fa:16:3e:%02x:%02x:30" % (n % 256, (n // 256) % 256)}


def main() -> int:
    parser = arguments("netbox_bulk", __doc__)
    parser.add_argument("--batch", type=at_least(1), default=50, help="VMs per round")
    parser.add_argument("--rounds", type=at_least(2), default=4,
                        help="rounds of each kind (even: ABBA order)")
    args = parser.parse_args()
    import pynetbox
    from tests.servers import netbox
    from tests.servers.stack import PREFIXES
    workdir = Path(tempfile.mkdtemp(prefix="netbox-bulk-"))
    server = netbox.start(workdir / "netbox", progress=lambda line: log("  " + line))
    try:
        api = pynetbox.api(server.url, token=server.token)
        for prefix in PREFIXES:
            if api.ipam.prefixes.get(prefix=prefix) is None:
                api.ipam.prefixes.create(prefix=prefix, status="active")
        ipam, inventory = _drivers(server.url, server.token)
        counter = Counter()
        counter.watch("ipam", ipam.api)
        counter.watch("inventory", inventory.api)
        per_call_round(ipam, inventory, 1, 1)  # custom fields, cluster, prefixes: once
        cluster = inventory._cluster()
        counter.take()
        found: Dict[str, List[float]] = {"per_call": [], "bulk": []}
        before = machine()
        n = 10
        for i in range(args.rounds * 2):
            kind = ("per_call", "bulk", "bulk", "per_call")[i % 4]
            if kind == "per_call":
                seconds = per_call_round(ipam, inventory, n, args.batch)
            else:
                seconds = bulk_round(api, cluster, n, args.batch)
            found[kind].append(seconds)
            log("round %d %-8s %d VMs in %.2f s: %.2f VM/s" % (
                i + 1, kind, args.batch, seconds, args.batch / seconds))
            n += args.batch
        requests = counter.take()
        rates = {kind: [args.batch / s for s in seconds] for kind, seconds in found.items()}
        result = {
            "batch": args.batch, "rounds": args.rounds,
            "netbox_alone_vm_per_s": round(statistics.median(rates["bulk"]), 2),
            "vm_per_s_per_call_driver": round(statistics.median(rates["per_call"]), 2),
            "bulk_over_per_call": ratio(statistics.median(rates["bulk"]),
                                        statistics.median(rates["per_call"])),
            "per_call_requests_per_vm": {
                b: {k: v / (args.batch * args.rounds) for k, v in c.items()}
                for b, c in requests.items()},
            "bulk_requests_per_batch": {"reads": 1, "writes": 6},
            "seconds": {k: [round(s, 3) for s in v] for k, v in found.items()},
            "machine_before": before, "machine_after": machine()}
        print(table(["path", "VM/s (median of %d rounds)" % args.rounds, "rounds VM/s"], [
            [kind, "%.2f" % statistics.median(r), " ".join("%.2f" % x for x in r)]
            for kind, r in rates.items()]))
        print("bulk / per call: x%.2f" % result["bulk_over_per_call"])
        out = save("netbox_bulk", result, args.json)
        log("results in %s" % out)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
