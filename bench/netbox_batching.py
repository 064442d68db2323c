"""A burst through the whole pipeline with the NetBox steps per call, then batched.

One private stack (Redis, slapd, BIND, NetBox, the relay, a pool per step) and two
bursts of ``--vms`` VMs each, one after the other against the same NetBox:

1. ``per_call``: the IPAM and inventory pools as tests/servers/stack.py POOLS has
   them (prefork, 2 processes each): one step per process, every NetBox write alone;
2. ``batched``: the same two pools restarted as threads pools of ``--threads``
   (``celery worker -P threads -c N``): steps running at once share NetBox list
   requests (tasks/backends/coalesce.py, README "Batching NetBox writes").

Per burst: VMs/s from the first hook to the last build chain's audit record, hook to
A and PTR resolvable at BIND (p50/p99), and queue depths every second (for the plot).
Then, with the bursts drained, ``netbox_alone_vm_per_s``: NetBox's own rate for the
same writes as list requests of ``--alone-batch`` VMs, without Celery
(bench/netbox_bulk.py's bulk round), against the same NetBox in the same run
(the workers idle beside it). The summary keys of issue 14 go to
bench/results/netbox.json.

    .venv/bin/python bench/netbox_batching.py --vms 200 --threads 16
"""

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (RESULTS, DepthSampler, arguments, at_least, log, machine,  # noqa: E402
                          percentile, ratio, save, step_log_lines)
from bench.pipeline_latency import run_burst  # noqa: E402

NETBOX_QUEUES = ("ipam", "inventory")


def _restart(procs: Any, pool: str, threads: int, queues: Any = NETBOX_QUEUES) -> None:
    from tests.helpers import until
    for queue in queues:
        procs.workers[queue].stop()
        worker = procs.start_worker(queue, concurrency=threads if pool == "threads" else None,
                                    pool=pool if pool == "threads" else None)
        until(lambda worker=worker: "ready." in worker.log.read_text(errors="replace"), 60,
              "%s pool" % queue)


def _burst(stack: Any, count: int, offset: int, wait: float) -> Dict[str, Any]:
    import redis
    from novahooks.nova.outbox import Outbox
    sampler = DepthSampler(redis.Redis.from_url(stack.redis.url), Outbox(str(stack.outbox_path)))
    sampler.start()
    try:
        found = run_burst(stack, count, offset, dns=True, remove=False, wait=wait)
    finally:
        found["depths"] = sampler.stop()
    found["dns_register"] = _dns_register(stack, count, offset)
    return found


def _dns_register(stack: Any, count: int, offset: int) -> Dict[str, Any]:
    """Where the build chain's first step spent its time, from the dns pool's log lines:
    the whole run, the DNS write (backend), the lock, and each backend its preflight
    asked (p50/p99 ms). Hook to record minus the run is the wait in the dns queue."""
    from tests.demo import demo_vms
    names = {vm.hostname for vm in demo_vms(count + offset)[offset:]}
    lines = [line for line in step_log_lines(stack.workdir / "logs")
             if line.get("step") == "dns.register" and line.get("kind") == "build"
             and line.get("outcome") == "ok" and line.get("hostname") in names]
    parts: Dict[str, List[float]] = {}
    for line in lines:
        for key in ("duration_ms", "backend_ms", "lock_wait_ms"):
            parts.setdefault(key, []).append(float(line.get(key) or 0))
        for kind, ms in (line.get("preflight_ms") or {}).items():
            parts.setdefault("preflight_%s_ms" % kind, []).append(float(ms))
    return {"runs": len(lines), **{key: {"p50": round(percentile(v, 0.5), 1),
                                        "p99": round(percentile(v, 0.99), 1)}
                                  for key, v in sorted(parts.items())}}


def _alone(stack: Any, rounds: int, batch: int) -> Dict[str, Any]:
    """NetBox's own rate for the bursts' writes in bulk (bench/netbox_bulk.py), from
    10.20.150.x up: the bursts' addresses (tests/demo.py) stay below 10.20.150.0 up to
    12,000 VMs."""
    import statistics

    import pynetbox
    from bench.netbox_bulk import _drivers, bulk_round
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    cluster = _drivers(stack.netbox.url, stack.netbox.token)[1]._cluster()
    rates = []
    for r in range(rounds):
        seconds = bulk_round(api, cluster, r * batch, batch, octet=150)
        rates.append(batch / seconds)
        log("NetBox alone, round %d: %d VMs in list requests, %.2f VM/s"
            % (r + 1, batch, rates[-1]))
    return {"vm_per_s": round(statistics.median(rates), 2),
            "rounds_vm_per_s": [round(x, 2) for x in rates], "batch": batch}


def main() -> int:
    parser = arguments("netbox_batching", __doc__)
    parser.add_argument("--vms", type=at_least(10), default=200, help="VMs per burst")
    parser.add_argument("--threads", type=at_least(2), default=16,
                        help="threads of each NetBox pool in the batched burst")
    parser.add_argument("--wait", type=float, default=0, help="seconds a burst may take")
    parser.add_argument("--dns-pool", type=at_least(1), default=1,
                        help="processes of the dns pool (both bursts): the first step's")
    parser.add_argument("--dns-threads", type=int, default=0,
                        help="in the batched burst, the dns pool as a threads pool of this "
                        "many (its IPAM preflight reads then share GETs); 0: as per call")
    parser.add_argument("--watch", type=float, default=0,
                        help="[ipam] preflight_watch of every pool, both bursts (seconds "
                        "between refreshes of the copy of the prefixes; 0: off)")
    parser.add_argument("--alone-rounds", type=at_least(1), default=4,
                        help="rounds of NetBox alone (list requests) after the bursts")
    parser.add_argument("--alone-batch", type=at_least(1), default=50,
                        help="VMs per list request of NetBox alone")
    parser.add_argument("--only", choices=("per_call", "batched"), default=None,
                        help="run one burst; its figures go to --json (default "
                        "results/netbox_batching_<mode>.json), not to netbox.json")
    args = parser.parse_args()
    import os
    from tests.servers.stack import POOLS, Processes, Stack
    POOLS["dns"] = args.dns_pool  # this process's copy: Processes.start_workers reads it
    stack = Stack(Path(tempfile.mkdtemp(prefix="novahooks-bench-batching-")), progress=log)
    stack.start()
    os.environ["NOVAHOOKS_CONFIG"] = str(stack.config_path)
    if args.watch:
        os.environ["NOVAHOOKS_IPAM_PREFLIGHT_WATCH"] = str(args.watch)
    procs = Processes(stack, progress=log)
    try:
        procs.start_workers()
        procs.start_relay()
        before = machine()
        bursts: Dict[str, Any] = {}
        offset = 0
        for mode in (args.only,) if args.only else ("per_call", "batched"):
            _restart(procs, "threads" if mode == "batched" else "prefork", args.threads)
            if args.dns_threads:
                _restart(procs, "threads" if mode == "batched" else "prefork",
                         args.dns_threads, ("dns",))
            log("burst of %d VMs, NetBox steps %s ..." % (args.vms, mode))
            bursts[mode] = _burst(stack, args.vms, offset, args.wait)
            offset += args.vms
            log("%s: %.2f VM/s, DNS p99 %.1f s" % (
                mode, bursts[mode].get("vm_per_s", 0),
                bursts[mode].get("dns", {}).get("p99_ms", 0) / 1000))
        if args.only:
            alone = _alone(stack, args.alone_rounds, args.alone_batch)
            out = save("netbox_batching_%s" % args.only,
                       {"bursts": bursts, "netbox_alone": alone,
                        "over_netbox_alone": ratio(bursts[args.only]["vm_per_s"],
                                                   alone["vm_per_s"]),
                        "dns_threads": args.dns_threads or None,
                        "preflight_watch_s": args.watch or None,
                        "threads": args.threads, "machine_before": before,
                        "machine_after": machine()}, args.json)
            print(json.dumps(bursts[args.only]["dns_register"], indent=1))
            log("results in %s" % out)
            return 0
        per_call, batched = bursts["per_call"], bursts["batched"]
        alone = _alone(stack, args.alone_rounds, args.alone_batch)
        calls = json.loads((RESULTS / "netbox_calls.json").read_text())["calls_per_vm"][
            "current (steps, ledger notes)"]["hook"]["warm"]
        summary = {
            "calls_per_vm": {"reads": calls["ipam"]["reads"] + calls["inventory"]["reads"],
                             "writes": calls["ipam"]["writes"] + calls["inventory"]["writes"],
                             "by_driver": calls, "goal": {"reads": 3, "writes": 5},
                             "source": "netbox_calls.json, hook path, ledger notes"},
            "vm_per_s_batched": round(batched["vm_per_s"], 3),
            "vm_per_s_per_call": round(per_call["vm_per_s"], 3),
            "speedup": ratio(batched["vm_per_s"], per_call["vm_per_s"]),
            "netbox_alone_vm_per_s": alone["vm_per_s"],
            "netbox_alone": dict(alone, source="this run, the same NetBox, after the bursts"),
            "batched_over_netbox_alone": ratio(batched["vm_per_s"], alone["vm_per_s"]),
            "dns_p99_s": round(batched["dns"]["p99_ms"] / 1000, 1),
            "dns_p99_s_per_call": round(per_call["dns"]["p99_ms"] / 1000, 1),
            "vms_per_burst": args.vms, "threads": args.threads,
            "dns_threads_batched": args.dns_threads or None,
            "preflight_watch_s": args.watch or None,
            "pools_per_call": dict(POOLS)}
        previous = RESULTS / "netbox.json"
        if previous.exists():
            for key in ("grown_over_empty", "grown_over_empty_no_ledger"):
                summary[key] = json.loads(previous.read_text()).get(key)
        save("netbox", summary)
        out = save("netbox_batching", {"bursts": bursts, "summary": summary,
                                       "machine_before": before, "machine_after": machine()},
                   args.json)
        print(json.dumps({k: v for k, v in summary.items() if k != "calls_per_vm"}, indent=1))
        log("results in %s and %s" % (out, RESULTS / "netbox.json"))
    finally:
        procs.stop()
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
