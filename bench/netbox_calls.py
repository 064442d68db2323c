"""NetBox HTTP requests per VM lifecycle, IPAM and inventory drivers, baseline and current.

Counts every request the drivers send (GET: a read; POST, PATCH, PUT, DELETE: a
write) for one VM's lifecycle, per driver path:

* ``hook``: create (pre-boot, no addresses), build, delete (what the Nova hooks send);
* ``notifications``: build (``instance.create.end``), delete;
* ``attach``: one port attached to a built VM, then detached (two network events).

The current drivers are called the way the steps call them, with the ledger's
notes of the earlier steps (``ensure_with``/``register_with``...) and IPAM's preflight,
which the build and network chains' first step asks (tasks/preflight.py); the baseline
drivers are the same files at ``--baseline`` (a git commit), loaded side by side
into this process, against the same NetBox, in the same run. Counts are
deterministic; the first VM of a process also pays one-time lookups (custom
fields, cluster, prefixes), shown apart as ``cold``.

    .venv/bin/python bench/netbox_calls.py --vms 5
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import log, module_at, save, start_stack, table  # noqa: E402

BASELINE = "a9fcc0e"
PATHS = ("hook", "notifications", "attach")


class Counter(object):
    """Requests per backend, read from the drivers' own HTTP sessions."""

    def __init__(self) -> None:
        self.counts: Dict[str, Dict[str, int]] = {}

    def watch(self, backend: str, api: Any) -> None:
        def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
            kind = "reads" if response.request.method == "GET" else "writes"
            self.counts.setdefault(backend, {"reads": 0, "writes": 0})[kind] += 1
            return response
        api.http_session.hooks["response"].append(hook)

    def take(self) -> Dict[str, Dict[str, int]]:
        taken = {b: dict(c) for b, c in self.counts.items()}
        self.counts = {}
        for backend in ("ipam", "inventory"):
            taken.setdefault(backend, {"reads": 0, "writes": 0})
        return taken


def drivers(which: str, commit: str, settings: Any) -> Tuple[Any, Any]:
    if which == "current":
        from tasks.backends.inventory.netbox import NetBoxInventory
        from tasks.backends.ipam.netbox import NetBoxIpam
        return NetBoxIpam(settings.ipam), NetBoxInventory(settings.inventory)
    client = module_at("baseline_client", commit, "tasks/backends/netbox/client.py")
    ipam = module_at("baseline_ipam", commit, "tasks/backends/ipam/netbox.py", client=client)
    inventory = module_at("baseline_inventory", commit, "tasks/backends/inventory/netbox.py",
                        client=client)
    # The baseline's chain asked IPAM nothing ahead (today's IpamDriver declares preflight).
    baseline_ipam = type("NetBoxIpam", (ipam.NetBoxIpam,), {"preflight": None})
    return baseline_ipam(settings.ipam), inventory.NetBoxInventory(settings.inventory)


class Steps(object):
    """The two NetBox steps as the chains run them; ``ledger``: hand in the ledger's notes."""

    def __init__(self, ipam: Any, inventory: Any, ledger: bool) -> None:
        self.ipam, self.inventory, self.ledger = ipam, inventory, ledger
        self.made: Dict[str, Any] = {}
        #: marks a point of the lifecycle (measure() sets it to take the counts so far)
        self.counted: Callable[[], None] = lambda: None

    def register(self, event: Any) -> None:
        fqdn = "%s.cloud.example.test" % event.hostname
        if event.addresses is not None and self.ipam.preflight is not None:
            # what the chain's first writer (dns.register, tasks/preflight.py) asks IPAM
            for item in event.addresses:
                self.ipam.prefix_of(item.address)
            self.ipam.preflight(event.uuid, fqdn, event.addresses)
        if event.addresses is not None:
            if self.ledger:
                self.made["ipam"] = self.ipam.ensure_with(event.uuid, fqdn, event.addresses,
                                                          self.made.get("ipam", {}))
            else:
                self.ipam.ensure(event.uuid, fqdn, event.addresses)
        if self.ledger:
            self.made["inventory"] = self.inventory.register_with(event, self.made)
        else:
            self.inventory.register(event)

    def delete(self, event: Any) -> None:
        if self.ledger:
            self.inventory.deregister_with(event, self.made)
            self.ipam.release_with(event.uuid, self.made.get("ipam"))
        else:
            self.inventory.deregister(event)
            self.ipam.release(event.uuid)
        self.made = {}


def lifecycle(path: str, n: int) -> List[Callable[[Steps], None]]:
    """The events of one VM's lifecycle on ``path``, as calls on the steps."""
    from novahooks.event import Address, Flavor, new_event
    mac = "fa:16:3e:%02x:%02x:%02x" % (n % 256, (n // 256) % 256, 0x10)
    added = "fa:16:3e:%02x:%02x:%02x" % (n % 256, (n // 256) % 256, 0x20)
    ports = [Address("10.20.%d.%d" % (200 + n // 200, n % 200 + 2), 4, mac, "private",
                     "port-%d" % n)]
    more = ports + [Address("10.20.%d.%d" % (220 + n // 200, n % 200 + 2), 4, added,
                            "private", "port-%d-b" % n)]
    fields = {"flavor": Flavor("m1.small", 1, 2048, 20, 0, 0), "project_id": "bench",
              "source": "bench"}
    uuid = "00000000-0000-4000-8000-%012d" % n
    name = "calls-%s-%d" % (path, n)
    create = new_event("create", uuid, name, addresses=None, vm_state="building", **fields)
    build = new_event("build", uuid, name, addresses=ports, vm_state="active", **fields)
    attach = build._replace(kind="network", addresses=more)
    detach = build._replace(kind="network", addresses=ports)
    delete = build._replace(kind="delete")
    if path == "hook":
        return [lambda s: s.register(create), lambda s: s.register(build),
                lambda s: s.delete(delete)]
    if path == "notifications":
        return [lambda s: s.register(build), lambda s: s.delete(delete)]
    return [lambda s: s.register(build), lambda s: s.counted(),
            lambda s: s.register(attach), lambda s: s.register(detach),
            lambda s: s.counted(), lambda s: s.delete(delete)]


def measure(which: str, ledger: bool, commit: str, settings: Any, vms: int,
            first: int) -> Dict[str, Any]:
    """Per path: the counts of the first (cold) VM and of every later one (warm)."""
    ipam, inventory = drivers(which, commit, settings)
    counter = Counter()
    counter.watch("ipam", ipam.api)
    counter.watch("inventory", inventory.api)
    found: Dict[str, Any] = {}
    for path in PATHS:
        runs = []
        for n in range(first, first + vms):
            steps = Steps(ipam, inventory, ledger)
            kept: List[Dict[str, Dict[str, int]]] = []
            steps.counted = lambda kept=kept: kept.append(counter.take())
            counter.take()
            for call in lifecycle(path, n):
                call(steps)
            counts = counter.take()
            if path == "attach":  # only the attach and detach, between the two marks
                counts = kept[1]
            runs.append(counts)
        warm = runs[1:] or runs
        found[path] = {"cold": runs[0], "warm": warm[-1],
                       "warm_all_equal": all(r == warm[0] for r in warm)}
        first += vms
    return found


def total(counts: Dict[str, Dict[str, int]], kind: str) -> int:
    return counts["ipam"][kind] + counts["inventory"][kind]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=5, help="VMs per path and driver set")
    parser.add_argument("--baseline", default=BASELINE, help="git commit of the baseline")
    parser.add_argument("--out", default=None, help="result file (default bench/results/)")
    args = parser.parse_args()
    stack = start_stack("netbox-calls")
    try:
        from tasks.config import settings
        config = settings()
        results: Dict[str, Any] = {}
        first = 1
        for label, which, ledger in (("baseline", "baseline", False),
                                     ("current (steps, ledger notes)", "current", True),
                                     ("current (no ledger: reconcile repair)", "current",
                                      False)):
            log("measuring %s ..." % label)
            results[label] = measure(which, ledger, args.baseline, config, args.vms, first)
            first += args.vms * len(PATHS)
        rows = []
        for path in PATHS:
            for label, found in results.items():
                warm, cold = found[path]["warm"], found[path]["cold"]
                rows.append([path, label, warm["ipam"]["reads"], warm["ipam"]["writes"],
                             warm["inventory"]["reads"], warm["inventory"]["writes"],
                             total(warm, "reads"), total(warm, "writes"),
                             "%d/%d" % (total(cold, "reads"), total(cold, "writes")),
                             "yes" if found[path]["warm_all_equal"] else "no"])
        print(table(["path", "drivers", "ipam r", "ipam w", "inv r", "inv w", "reads",
                     "writes", "cold r/w", "steady"], rows))
        base, now = results["baseline"], results["current (steps, ledger notes)"]
        for path in PATHS:
            print("%-13s requests per lifecycle: %d -> %d (x%.2f)" % (
                path, total(base[path]["warm"], "reads") + total(base[path]["warm"], "writes"),
                total(now[path]["warm"], "reads") + total(now[path]["warm"], "writes"),
                (total(now[path]["warm"], "reads") + total(now[path]["warm"], "writes")) /
                max(1, total(base[path]["warm"], "reads") + total(base[path]["warm"], "writes"))))
        out = save("netbox_calls", {"vms": args.vms, "baseline": args.baseline,
                                    "calls_per_vm": results}, args.out)
        log("results in %s" % out)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
