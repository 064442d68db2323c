"""Several VMs' Infoblox steps at once in one worker, their WAPI ``request`` objects
merged (``batch_size`` 50) against each sent alone (``batch_size`` 1), side by side against
one WAPI stand-in (tests/servers/wapi: no NIOS appliance runs here).

Each VM goes through the calls the build and delete chains make to the two Infoblox
drivers (IPAM preflight, DNS register, IPAM ensure, DNS deregister, IPAM release), with
an IPv4 and an IPv6 address; ``--threads`` VMs at a time share one driver pair, as the
steps of a threads pool (``-P threads -c N``) share a process's drivers. Rounds of
``--vms`` VMs alternate between the two settings (merged, alone, alone, merged, ...).
``--call-ms`` makes the stand-in spend that long on each call, one call at a time: a
model of a grid master's per-call cost (a real one answers in tens of milliseconds); at
0 the times are the stand-in's own on loopback. What carries over to a real grid is the
count of requests, not these rates.

    .venv/bin/python bench/infoblox_batching.py --vms 200 --threads 16 --call-ms 0 20
"""

import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import arguments, log, ratio, save, table  # noqa: E402
from bench.infoblox_calls import _configure, _seed  # noqa: E402

MODES = {"merged": 50, "alone": 1}


def _drivers(settings: Any, batch_size: int) -> Dict[str, Any]:
    from tasks.backends.dns.infoblox import InfobloxDns
    from tasks.backends.ipam.infoblox import InfobloxIpam
    settings.ipam.batch_size = settings.dns.batch_size = batch_size
    pair = {"ipam": InfobloxIpam(settings.ipam), "dns": InfobloxDns(settings.dns)}
    for driver in pair.values():
        driver.wapi.ensure_uuid_attribute()  # once per grid and process, not measured
    return pair


def _lifecycle(pair: Dict[str, Any], n: int) -> None:
    from novahooks.event import Address
    uuid = "00000000-0000-4000-8000-%012d" % n
    fqdn = "ibb-%d.cloud.example.test" % n
    addresses = [Address("10.20.%d.%d" % (n // 250, n % 250 + 2), 4),
                 Address("2001:db8:20::%x" % (n + 16), 6)]
    pair["ipam"].preflight(uuid, fqdn, addresses)
    pair["dns"].register(fqdn, uuid, addresses)
    pair["ipam"].ensure(uuid, fqdn, addresses)
    pair["dns"].deregister(fqdn, uuid, addresses)
    pair["ipam"].release(uuid)


def _round(pair: Dict[str, Any], first: int, vms: int, threads: int) -> Dict[str, Any]:
    """``vms`` lifecycles, ``threads`` at a time; requests that reached the grid, seconds."""
    sent = {"n": 0}
    lock = threading.Lock()

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            sent["n"] += 1
        return response
    for driver in pair.values():
        driver.wapi.session.hooks["response"] = [hook]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(_lifecycle, pair, first + i) for i in range(vms)]:
            done.result()
    seconds = time.perf_counter() - started
    return {"requests": sent["n"], "seconds": seconds, "vm_per_s": vms / seconds}


def _measure(call_ms: float, vms: int, threads: int, rounds: int) -> Dict[str, Any]:
    from tests.servers.wapi import start_wapi
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-infoblox-batching-"))
    server = start_wapi(workdir, call_ms=call_ms)
    try:
        _seed(server)
        pairs = {mode: _drivers(_configure(server, workdir), size)
                 for mode, size in MODES.items()}
        runs: Dict[str, List[Dict[str, Any]]] = {mode: [] for mode in MODES}
        order = list(MODES)
        for r in range(rounds):
            for mode in (order if r % 2 == 0 else order[::-1]):
                found = _round(pairs[mode], len(runs["merged"] + runs["alone"]) * vms,
                               vms, threads)
                runs[mode].append(found)
                log("call_ms %g round %d %s: %.2f VM/s, %.2f requests per VM" % (
                    call_ms, r, mode, found["vm_per_s"], found["requests"] / vms))
    finally:
        server.stop()
    result: Dict[str, Any] = {"call_ms": call_ms}
    for mode, found in runs.items():
        result[mode] = {"vm_per_s": round(statistics.median(f["vm_per_s"] for f in found), 2),
                        "rounds_vm_per_s": [round(f["vm_per_s"], 2) for f in found],
                        "requests_per_vm": round(statistics.median(
                            f["requests"] / vms for f in found), 2)}
    result["speedup"] = ratio(result["merged"]["vm_per_s"], result["alone"]["vm_per_s"])
    result["fewer_requests"] = ratio(result["alone"]["requests_per_vm"],
                                     result["merged"]["requests_per_vm"])
    return result


def main() -> int:
    parser = arguments("infoblox_batching", __doc__)
    parser.add_argument("--vms", type=int, default=200, help="VM lifecycles per round")
    parser.add_argument("--threads", type=int, default=16, help="VMs at a time")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per setting")
    parser.add_argument("--call-ms", type=float, nargs="+", default=[0.0, 20.0],
                        help="the stand-in's added cost per call, one run each")
    args = parser.parse_args()
    results = [_measure(ms, args.vms, args.threads, args.rounds) for ms in args.call_ms]
    print(table(["ms added per call", "requests per VM alone", "merged", "VM/s alone",
                 "merged", "speedup"],
                [[r["call_ms"], r["alone"]["requests_per_vm"], r["merged"]["requests_per_vm"],
                  r["alone"]["vm_per_s"], r["merged"]["vm_per_s"], r["speedup"]]
                 for r in results]))
    out = save("infoblox_batching", {"vms": args.vms, "threads": args.threads,
                                     "rounds": args.rounds, "results": results}, args.json)
    log("results in %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
