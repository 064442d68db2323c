"""A VM lifecycle's NetBox time in an empty NetBox and in a grown one, side by side.

Two NetBoxes run at once on this machine: one cloned from the migrated database,
one from a database grown to ``--grown-vms`` VMs (one interface each) and
``--grown-ips`` addresses on them, every record carrying the custom fields the
drivers key on (tests/servers/netbox.py grown_template, cached after the first
load). The IPAM and inventory drivers run the hook lifecycle (create, build,
delete) VM after VM, alternating between the two NetBoxes (ABBA), the way the
steps call them: with the ledger's notes (the hot path) and without (what a
reconcile repair does). Each request's time is kept by kind (method, endpoint,
filter names), so a lookup that grows with NetBox shows by name.

    .venv/bin/python bench/netbox_grown.py --vms 20
"""

import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import arguments, at_least, log, machine, ratio, save, table  # noqa: E402
from bench.netbox_calls import Steps, lifecycle  # noqa: E402

GOAL = 1.2


class Timings(object):
    """Seconds per request kind, read from the drivers' own HTTP sessions."""

    def __init__(self) -> None:
        self.by_kind: Dict[str, List[float]] = {}

    def watch(self, api: Any) -> None:
        def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
            url = urlparse(response.request.url)
            path = re.sub(r"/\d+/", "/{id}/", url.path)
            keys = ",".join(sorted(parse_qs(url.query)))
            kind = "%s %s%s" % (response.request.method, path, "?" + keys if keys else "")
            self.by_kind.setdefault(kind, []).append(response.elapsed.total_seconds())
            if response.elapsed.total_seconds() > 1.0:
                log("  slow: %.1f s %s" % (response.elapsed.total_seconds(),
                                           response.request.url))
            return response
        api.http_session.hooks["response"].append(hook)


def _side(name: str, url: str, token: str) -> Tuple[Any, Any, Timings]:
    from novahooks.settings import load_settings
    from tasks.backends.inventory.netbox import NetBoxInventory
    from tasks.backends.ipam.netbox import NetBoxIpam
    settings = load_settings("/dev/null", {
        "NOVAHOOKS_IPAM_URL": url, "NOVAHOOKS_IPAM_TOKEN": token,
        "NOVAHOOKS_INVENTORY_URL": url, "NOVAHOOKS_INVENTORY_TOKEN": token,
        # a request that grows with NetBox should be measured, not cut off
        "NOVAHOOKS_IPAM_TIMEOUT": "300", "NOVAHOOKS_INVENTORY_TIMEOUT": "300"})
    ipam, inventory = NetBoxIpam(settings.ipam), NetBoxInventory(settings.inventory)
    timings = Timings()
    timings.watch(ipam.api)
    timings.watch(inventory.api)
    return ipam, inventory, timings


def _seed(url: str, token: str) -> None:
    import pynetbox
    from tests.servers.stack import PREFIXES
    api = pynetbox.api(url, token=token)
    for prefix in PREFIXES:
        if api.ipam.prefixes.get(prefix=prefix) is None:
            api.ipam.prefixes.create(prefix=prefix, status="active")


def _run_one(ipam: Any, inventory: Any, ledger: bool, n: int) -> float:
    steps = Steps(ipam, inventory, ledger)
    started = time.perf_counter()
    for call in lifecycle("hook", n):
        call(steps)
    return time.perf_counter() - started


def main() -> int:
    parser = arguments("netbox_grown", __doc__)
    parser.add_argument("--vms", type=at_least(2), default=20,
                        help="lifecycles per NetBox and mode")
    parser.add_argument("--grown-vms", type=int, default=50000)
    parser.add_argument("--grown-ips", type=int, default=100000)
    args = parser.parse_args()
    import tempfile
    from tasks.backends.netbox.client import CUSTOM_FIELDS
    from novahooks.settings import InventorySettings
    from tests.servers import netbox
    fields = {name: [label, types] for name, (label, types) in CUSTOM_FIELDS.items()}
    grown_db = netbox.grown_template(args.grown_vms, args.grown_ips, InventorySettings.cluster,
                                     InventorySettings.cluster_type, fields,
                                     progress=lambda line: log("  " + line))
    workdir = Path(tempfile.mkdtemp(prefix="netbox-grown-"))
    servers = {}
    try:
        servers["empty"] = netbox.start(workdir / "empty", progress=lambda line: log("  " + line))
        servers["grown"] = netbox.start(workdir / "grown", template=grown_db,
                                        progress=lambda line: log("  " + line))
        sides = {}
        for name, server in servers.items():
            _seed(server.url, server.token)
            sides[name] = _side(name, server.url, server.token)
        found: Dict[str, Any] = {"machine_before": machine()}
        n = 1
        for mode, ledger in (("ledger", True), ("no_ledger", False)):
            seconds: Dict[str, List[float]] = {"empty": [], "grown": []}
            first: Dict[str, float] = {}
            for name in ("empty", "grown"):  # the first VM of a process pays one-time lookups
                first[name] = round(_run_one(sides[name][0], sides[name][1], ledger, n), 3)
                log("first lifecycle of %s (%s): %.1f s" % (name, mode, first[name]))
            n += 1
            for _, _, timings in sides.values():
                timings.by_kind = {}
            log("measuring %s: %d lifecycles per NetBox ..." % (mode, args.vms))
            for i in range(args.vms):
                order = ("empty", "grown") if i % 2 == 0 else ("grown", "empty")
                for name in order:
                    ipam, inventory, _ = sides[name]
                    seconds[name].append(_run_one(ipam, inventory, ledger, n))
                n += 1
            kinds = sorted(set(sides["empty"][2].by_kind) | set(sides["grown"][2].by_kind))
            per_kind = {}
            for kind in kinds:
                e = sides["empty"][2].by_kind.get(kind, [])
                g = sides["grown"][2].by_kind.get(kind, [])
                per_kind[kind] = {
                    "count_per_vm": len(e) / args.vms,
                    "empty_ms": round(1000 * statistics.median(e), 1) if e else None,
                    "grown_ms": round(1000 * statistics.median(g), 1) if g else None,
                    "ratio": ratio(statistics.median(g), statistics.median(e)) if e and g
                    else None}
            found[mode] = {
                "empty_s_median": round(statistics.median(seconds["empty"]), 3),
                "grown_s_median": round(statistics.median(seconds["grown"]), 3),
                "empty_s": [round(s, 3) for s in seconds["empty"]],
                "grown_s": [round(s, 3) for s in seconds["grown"]],
                "grown_over_empty": ratio(statistics.median(seconds["grown"]),
                                          statistics.median(seconds["empty"])),
                "first_lifecycle_s": first, "requests": per_kind}
            print("\n%s: lifecycle (hook: create, build, delete) median %.3f s empty, %.3f s "
                  "grown: x%.2f (goal <= %.1f)" % (
                      mode, found[mode]["empty_s_median"], found[mode]["grown_s_median"],
                      found[mode]["grown_over_empty"], GOAL))
            print(table(["request", "per VM", "empty ms", "grown ms", "x"],
                        [[k, v["count_per_vm"], v["empty_ms"], v["grown_ms"], v["ratio"]]
                         for k, v in per_kind.items()]))
        found["machine_after"] = machine()
        found.update({"vms": args.vms, "grown_vms": args.grown_vms,
                      "grown_ips": args.grown_ips, "goal": GOAL,
                      "grown_over_empty": found["ledger"]["grown_over_empty"]})
        out = save("netbox_grown", found, args.json)
        log("results in %s" % out)
    finally:
        for server in servers.values():
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
