"""N VMs created then deleted through the whole pipeline, against each backend alone.

Starts the real stack (Redis, slapd, BIND, NetBox, one worker pool per step,
the relay) and measures, side by side in one run:

1. each backend alone: the driver calls the pipeline makes to it per VM
   (``bench/inline.py``: create and delete), from as many processes as its worker
   pool has, without Celery: VMs per second that backend can take;
2. a few single VMs one after another on idle workers: per step, the task's time
   minus its backend calls (``backend_ms`` in the workers' step log lines) is what
   Celery, the ledger and validation add;
3. N VMs: Nova's hooks fired for every create, wait for every build chain, then
   every delete, wait for every delete chain; queue depths sampled each second and
   the worker pools' RSS at start and end.

Prints a table and ``throughput_ratio=R`` (end-to-end VMs/s over the slowest
backend's VMs/s; target >= 0.8). IPAM and inventory are one NetBox here, so the
physical limit is that server doing both jobs at once: 1b. measures it (both
backends' calls from both pools' processes together) and ``server_ratio=R`` compares
with it. Run with the project's .venv::

    .venv/bin/python bench/throughput.py --vms 1000
"""

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import inline  # noqa: E402
from bench.chaos import chaos_vms  # noqa: E402
from bench.common import (DepthSampler, arguments, cleanup, exit_on_sigterm, hop_overhead,  # noqa: E402
                          latency, log, pool_rss_mb, ratio, save, start_stack, step_log_lines,
                          step_overhead, table, wait_done)

#: worker queue -> the backend kind its step calls
QUEUE_BACKEND = {"ipam": "ipam", "dns": "dns", "ldap": "directory", "inventory": "inventory",
                 "audit": "audit"}


def backends_alone(vms: Sequence[Any], pools: Dict[str, int],
                   queues: Sequence[str] = tuple(QUEUE_BACKEND)) -> Dict[str, Dict[str, Any]]:
    """backend -> VMs/s and per-VM latency with the same calls and process count."""
    results = {}
    offset = 0
    for queue in queues:
        backend = QUEUE_BACKEND[queue]
        procs = pools[queue]
        # each backend gets VMs of its own: the same UUID is never registered twice
        mine = list(vms[offset:offset + len(vms) // len(queues)])
        offset += len(mine)
        chunks = [mine[i::procs] for i in range(procs)]
        # spawned, not forked: a fork would share the parent's driver connections
        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(inline.lifecycle, [backend] * procs, chunks))
        per_vm = [t for part in parts for t in part]
        # the busiest process's time in driver calls: process start and imports not counted
        wall = max(sum(part) for part in parts)
        results[backend] = dict(latency(per_vm), vms=len(mine), processes=procs,
                                seconds=wall, vm_per_s=len(mine) / wall)
        log("  %-9s alone: %d VMs in %.1f s with %d process(es): %.2f VM/s (p50 %.0f ms/VM)"
            % (backend, len(mine), wall, procs, len(mine) / wall,
               results[backend]["p50_ms"]))
    return results


def shared_server(vms: Sequence[Any], pools: Dict[str, int],
                  queues: Sequence[str] = ("ipam", "inventory")) -> Dict[str, Any]:
    """One server behind several backends (NetBox: IPAM and inventory): VMs/s it takes
    when every VM gets all of those backends' calls, from all their pools at once."""
    jobs = []
    for queue in queues:
        procs = pools[queue]
        jobs += [(QUEUE_BACKEND[queue], list(vms[i::procs])) for i in range(procs)]
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(inline.lifecycle, [b for b, _ in jobs], [c for _, c in jobs]))
    wall = max(sum(part) for part in parts)
    return dict(vms=len(vms), processes=len(jobs), seconds=wall, vm_per_s=len(vms) / wall,
                backends=[QUEUE_BACKEND[q] for q in queues])


def single_vms(stack: Any, vms: Sequence[Any], timeout: float) -> Dict[str, Any]:
    """VMs one at a time on idle workers: chain latency and per-step overhead."""
    from tasks import simulate
    uuids = set()
    chains = {}  # type: Dict[str, Dict[str, Any]]
    for vm in vms:
        simulate.create(vm)
        chains.update(wait_done(stack.audit_path, ("create", "build"), {vm.uuid}, timeout))
        uuids.add(vm.uuid)
    for vm in vms:
        simulate.delete(vm)
    wait_done(stack.audit_path, ("delete",), uuids, timeout)
    time.sleep(1.0)  # the last step's log line follows its audit record
    lines = step_log_lines(stack.workdir / "logs")
    build = {k: r for k, r in chains.items() if k.endswith(":build")}
    return {"chain": latency([r["time"] - r["emitted_at"] for r in build.values()]),
            "hop_ms": latency([h / 1000.0 for h in hop_overhead(lines, build, 5)]),
            "steps": step_overhead(lines, uuids)}


def pipeline(stack: Any, procs: Any, vms: Sequence[Any], timeout: float) -> Dict[str, Any]:
    from tasks import simulate
    uuids = {vm.uuid for vm in vms}
    import redis
    from novahooks.nova.outbox import Outbox
    sampler = DepthSampler(redis.Redis.from_url(stack.redis.url), Outbox(str(stack.outbox_path)))
    rss_start = pool_rss_mb(procs)
    sampler.start()
    started = time.time()
    hook_seconds = []
    for vm in vms:
        t0 = time.perf_counter()
        simulate.create(vm)
        hook_seconds.append(time.perf_counter() - t0)
    fired = time.time() - started
    log("  %d creates fired in %.1f s; waiting for their chains" % (len(vms), fired))
    report = lambda n, want: log("    %d/%d chains done (%.0f s)" % (  # noqa: E731
        n, want, time.time() - started))
    built = wait_done(stack.audit_path, ("create", "build"), uuids, timeout, report, 2.0)
    created_at = time.time()
    for vm in vms:
        t0 = time.perf_counter()
        simulate.delete(vm)
        hook_seconds.append(time.perf_counter() - t0)
    log("  %d deletes fired; waiting for their chains" % len(vms))
    deleted = wait_done(stack.audit_path, ("delete",), uuids, timeout, report, 2.0)
    ended = max(r["time"] for r in deleted.values())
    time.sleep(1.0)
    rss_end = pool_rss_mb(procs)
    samples = sampler.stop()
    build_latency = [r["time"] - r["emitted_at"] for k, r in built.items()
                     if k.endswith(":build")]
    lines = step_log_lines(stack.workdir / "logs")
    total = ended - started
    return {
        "vms": len(vms), "events": 3 * len(vms), "seconds": total,
        "create_seconds": created_at - started, "delete_seconds": ended - created_at,
        "vm_per_s": len(vms) / total, "events_per_s": 3 * len(vms) / total,
        "hook_call": latency(hook_seconds), "build_chain_latency": latency(build_latency),
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "depths": samples,
        "steps": step_overhead(lines, uuids)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = arguments("throughput", __doc__,
                       timeout="seconds to wait per phase (default 300 + 6 per VM)")
    parser.add_argument("--vms", type=int, default=1000, help="VMs through the pipeline "
                        "(default 1000)")
    parser.add_argument("--alone", type=int, default=50,
                        help="VMs for the backends-alone measurement, shared out among the "
                             "five backends (default 50)")
    parser.add_argument("--single", type=int, default=3,
                        help="VMs one at a time for the per-step overhead (default 3)")
    args = parser.parse_args(argv)
    if args.vms < 1 or args.alone < len(QUEUE_BACKEND) or args.single < 1:
        parser.error("--vms and --single must be >= 1, --alone >= %d" % len(QUEUE_BACKEND))
    timeout = args.timeout or 300.0 + 6.0 * args.vms
    exit_on_sigterm()
    from tests.servers.stack import POOLS, Processes
    log("throughput: %d VMs; starting the stack" % args.vms)
    stack = start_stack("throughput")
    procs = None
    ok = False
    try:
        alone_vms = chaos_vms(args.alone, prefix="alone", first_octet=200)
        shared_vms = chaos_vms(max(args.alone // len(QUEUE_BACKEND), 4), prefix="shared",
                               first_octet=198)
        single = chaos_vms(args.single, prefix="single", first_octet=199)
        vms = chaos_vms(args.vms, prefix="tp", first_octet=60)
        log("backends alone (the pipeline's driver calls, no Celery):")
        alone = backends_alone(alone_vms, POOLS)
        netbox = shared_server(shared_vms, POOLS)
        log("  netbox for ipam and inventory at once: %d VMs in %.1f s with %d processes: "
            "%.2f VM/s" % (netbox["vms"], netbox["seconds"], netbox["processes"],
                           netbox["vm_per_s"]))
        procs = Processes(stack, progress=lambda line: log("  " + line))
        procs.start_workers()
        procs.start_relay()
        log("single VMs on idle workers:")
        one = single_vms(stack, single, timeout)
        log("pipeline:")
        result = pipeline(stack, procs, vms, timeout)
        ok = True
    finally:
        if procs is not None:
            procs.stop()
        stack.stop()
        cleanup(stack.workdir, ok)
    slowest = min(alone, key=lambda b: alone[b]["vm_per_s"])
    tp_ratio = ratio(result["vm_per_s"], alone[slowest]["vm_per_s"])
    rows = [("pipeline end to end (%d VMs)" % args.vms, result["vm_per_s"], 1.0)]
    rows += [("%s alone x%d" % (b, alone[b]["processes"]), alone[b]["vm_per_s"],
              ratio(result["vm_per_s"], alone[b]["vm_per_s"])) for b in alone]
    server_ratio = ratio(result["vm_per_s"], netbox["vm_per_s"])
    rows.append(("netbox: ipam + inventory x%d" % netbox["processes"], netbox["vm_per_s"],
                 server_ratio))
    print(table(("VMs created then deleted", "VM/s", "pipeline/this"), rows))
    print()
    for title, steps in (("step (single VMs, idle)", one["steps"]),
                         ("step (the %d-VM run)" % args.vms, result["steps"])):
        print(table((title, "runs", "task ms", "backend ms", "lock wait ms", "rest ms"),
                    [(s["step"], s["runs"], s["task_ms"], s["backend_ms"], s["lock_wait_ms"],
                      s["overhead_ms"]) for s in steps]))
        print()
    print("between steps (single VMs, idle build chains): relay + broker + Celery dispatch "
          "per hop p50 %.1f ms, max %.1f ms" % (one["hop_ms"]["p50_ms"],
                                                one["hop_ms"]["max_ms"]))
    growth = {q: ratio(result["rss_end_mb"][q] - result["rss_start_mb"][q],
                       result["rss_start_mb"][q]) for q in result["rss_start_mb"]}
    print()
    print(table(("worker pool", "RSS start MiB", "RSS end MiB", "growth"),
                [(q, result["rss_start_mb"][q], result["rss_end_mb"][q],
                  "%.1f%%" % (growth[q] * 100)) for q in result["rss_start_mb"]]))
    print("vms=%d seconds=%.1f vm_per_s=%.3f events_per_s=%.3f slowest_backend=%s "
          "slowest_vm_per_s=%.3f build_chain_p50_s=%.2f hook_p99_ms=%.3f"
          % (args.vms, result["seconds"], result["vm_per_s"], result["events_per_s"], slowest,
             alone[slowest]["vm_per_s"], result["build_chain_latency"]["p50_ms"] / 1000.0,
             result["hook_call"]["p99_ms"]))
    max_overhead = max([s["overhead_ms"] for s in one["steps"]] or [0.0])
    print("max_step_overhead_ms=%.2f" % max_overhead)
    print("throughput_ratio=%.2f" % tp_ratio)
    print("server_ratio=%.2f" % server_ratio)
    path = save("throughput", {"alone": alone, "netbox": netbox, "single": one,
                               "pipeline": result, "slowest_backend": slowest,
                               "throughput_ratio": tp_ratio, "server_ratio": server_ratio},
                args.json)
    log("results in %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
