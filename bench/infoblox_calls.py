"""WAPI round trips and time per VM lifecycle, Infoblox IPAM and DNS drivers, baseline and
current, against the WAPI stand-in (tests/servers/wapi: no NIOS appliance runs here).

One VM with an IPv4 and an IPv6 address, as the build chain and the delete chain call
the two drivers: IPAM's preflight (asked by the chain's first writer), DNS register,
IPAM ensure; then DNS deregister and IPAM release. The current drivers put a step's
searches in one WAPI ``request`` object (a list of GETs) and DNS's writes in another
(one transaction); the baseline drivers are the same files at ``--baseline`` (a git
commit), loaded beside today's into this process, against the same stand-in, in
rounds that alternate. Counts are deterministic; times are the stand-in's on loopback
(a real grid master answers each call in tens of milliseconds, so the ratio of calls
is what carries over, not the times).

    .venv/bin/python bench/infoblox_calls.py --vms 50
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import arguments, log, module_at, ratio, save, table  # noqa: E402

BASELINE = "6dc82ba"
ZONE = "cloud.example.test"
STEPS = ("ipam.preflight", "dns.register", "ipam.ensure", "dns.deregister", "ipam.release")


def _configure(server: Any, workdir: Path) -> Any:
    from novahooks.settings import load_settings
    secret = workdir / "infoblox.password"
    secret.write_text(server.password)
    secret.chmod(0o600)
    common = "url = %s\nusername = %s\npassword_file = %s\n" % (
        server.url, server.username, secret)
    path = workdir / "novahooks.conf"
    path.write_text("[ipam]\ndriver = infoblox\n%s\n[dns]\ndriver = infoblox\n%szone = %s\n"
                    "reverse_zones = 10.in-addr.arpa, 8.b.d.0.1.0.0.2.ip6.arpa\nttl = 600\n"
                    % (common, common, ZONE))
    return load_settings(str(path), {})


def _seed(server: Any) -> None:
    """The grid as an admin sets it up: networks and the zones."""
    import requests
    session = requests.Session()
    session.auth = (server.username, server.password)
    for objtype, body in (("network", {"network": "10.20.0.0/16"}),
                          ("ipv6network", {"network": "2001:db8:20::/64"}),
                          ("zone_auth", {"fqdn": ZONE}), ("zone_auth", {"fqdn": "10.0.0.0/8"}),
                          ("zone_auth", {"fqdn": "2001:db8::/32"})):
        session.post("%s/%s" % (server.url, objtype), json=body, timeout=5).raise_for_status()


def drivers(which: str, commit: str, settings: Any) -> Dict[str, Any]:
    from tasks.backends.infoblox import client
    if which == "current":
        from tasks.backends.dns.infoblox import InfobloxDns
        from tasks.backends.ipam.infoblox import InfobloxIpam
        ipam, dns = InfobloxIpam, InfobloxDns
    else:
        ipam = module_at("baseline_ipam", commit, "tasks/backends/ipam/infoblox.py",
                         client=client).InfobloxIpam
        dns = module_at("baseline_dns", commit, "tasks/backends/dns/infoblox.py",
                        client=client).InfobloxDns
    found = {"ipam": ipam(settings.ipam), "dns": dns(settings.dns)}
    for driver in found.values():
        driver.wapi.ensure_uuid_attribute()  # once per grid and process, not measured
    return found


def lifecycle(pair: Dict[str, Any], n: int) -> Dict[str, Any]:
    """One VM through both chains; WAPI requests per step and the lifecycle's seconds."""
    from novahooks.event import Address
    counts = {step: 0 for step in STEPS}
    current = {"step": ""}

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        counts[current["step"]] += 1
        return response
    for driver in pair.values():
        driver.wapi.session.hooks["response"] = [hook]
    uuid = "00000000-0000-4000-8000-%012d" % n
    fqdn = "ib-%d.%s" % (n, ZONE)
    addresses = [Address("10.20.%d.%d" % (n // 250, n % 250 + 2), 4),
                 Address("2001:db8:20::%x" % (n + 16), 6)]
    calls = (("ipam.preflight", lambda: pair["ipam"].preflight(uuid, fqdn, addresses)),
             ("dns.register", lambda: pair["dns"].register(fqdn, uuid, addresses)),
             ("ipam.ensure", lambda: pair["ipam"].ensure(uuid, fqdn, addresses)),
             ("dns.deregister", lambda: pair["dns"].deregister(fqdn, uuid, addresses)),
             ("ipam.release", lambda: pair["ipam"].release(uuid)))
    started = time.perf_counter()
    for step, call in calls:
        current["step"] = step
        call()
    return {"requests": counts, "seconds": time.perf_counter() - started}


def main() -> int:
    parser = arguments("infoblox_calls", __doc__)
    parser.add_argument("--vms", type=int, default=50, help="VM lifecycles per driver set")
    parser.add_argument("--baseline", default=BASELINE, help="git commit of the baseline")
    args = parser.parse_args()
    from tests.servers.wapi import start_wapi
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-infoblox-"))
    server = start_wapi(workdir)
    try:
        _seed(server)
        settings = _configure(server, workdir)
        pairs = {"baseline": drivers("baseline", args.baseline, settings),
                 "current": drivers("current", args.baseline, settings)}
        runs: Dict[str, List[Dict[str, Any]]] = {label: [] for label in pairs}
        for n in range(args.vms):  # alternate, so both see the same stand-in and machine
            for i, label in enumerate(pairs):
                runs[label].append(lifecycle(pairs[label], 2 * n + i))
        results: Dict[str, Any] = {}
        for label, found in runs.items():
            per_step = found[-1]["requests"]
            results[label] = {
                "requests_per_step": per_step, "requests_per_vm": sum(per_step.values()),
                "steady": all(r["requests"] == per_step for r in found[1:]),
                "median_ms_per_vm": round(statistics.median(r["seconds"] for r in found)
                                          * 1000, 2)}
        base, now = results["baseline"], results["current"]
        print(table(["step", "baseline", "current"],
                    [[step, base["requests_per_step"][step], now["requests_per_step"][step]]
                     for step in STEPS] +
                    [["per VM", base["requests_per_vm"], now["requests_per_vm"]],
                     ["median ms per VM", base["median_ms_per_vm"], now["median_ms_per_vm"]]]))
        summary = {"requests_per_vm": {"baseline": base["requests_per_vm"],
                                       "current": now["requests_per_vm"]},
                   "fewer_requests": ratio(base["requests_per_vm"], now["requests_per_vm"]),
                   "time_baseline_over_current": ratio(base["median_ms_per_vm"],
                                                       now["median_ms_per_vm"])}
        print("requests per VM lifecycle: %d -> %d (x%.2f fewer); stand-in time x%.2f" % (
            base["requests_per_vm"], now["requests_per_vm"], summary["fewer_requests"],
            summary["time_baseline_over_current"]))
        out = save("infoblox_calls", {"vms": args.vms, "baseline": args.baseline,
                                      "results": results, "summary": summary}, args.json)
        log("results in %s" % out)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
