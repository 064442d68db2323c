"""Scale and memory: a 10,000-event burst through the relay and through a worker pool.

The full chain runs at the slowest backend's pace (NetBox: under one VM per
second here, see throughput.py), so 10,000 full chains would take hours. The
burst is therefore measured in the two places that hold it, each with real
processes (private Redis, slapd, BIND; the relay; the audit worker pool as the
stack configures it):

1. **hook -> outbox -> relay -> broker**: ``--events`` build_instance post-hook
   calls as fast as they come, while the relay publishes; the outbox and the
   ``dns`` queue are sampled until every chain is queued (no dns worker runs,
   so the queue shows the whole burst), then every queued message is matched
   to a hook call (lost = 0?).
2. **broker -> worker**: ``--events`` audit-only chains (the remainder from
   ``audit.record``, what ``reconcile`` and ``dead-letters replay`` publish) into
   the audit pool, after ``--warmup`` of them: queue depth sampled until drained,
   the pool's RSS (main process and children) after the warm-up and at the end
   (target: growth < 10%), and what the result backend kept: results are
   ignored in celeryconfig, so no ``celery-task-meta-*`` key may be left
   (target 0).

Prints ``rss_growth=P%`` and ``result_keys=K``. Run with the project's .venv::

    .venv/bin/python bench/scale.py [--events 10000]
"""

import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.broker_down import fire, queued_uuids  # noqa: E402
from bench.chaos import chaos_vms  # noqa: E402
from bench.common import (FIRST_QUEUE,  # noqa: E402
                          DepthSampler, arguments, cleanup, exit_on_sigterm, latency, log,
                          pool_rss_mb, queue_depths, ratio, save, start_stack, table)


def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("%s not reached in %.0f s" % (what, timeout))
        time.sleep(0.1)


def result_keys(client: Any) -> Dict[str, int]:
    """Keys the result backend could have left, by kind, and every key's prefix count."""
    prefixes = {}  # type: Dict[str, int]
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        prefix = name.split("-", 3)[0] if name.startswith("celery-task-meta") else name
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
    meta = sum(1 for _ in client.scan_iter(match="celery-task-meta-*", count=1000))
    return {"celery_task_meta": meta, "keys": len(prefixes), "by_name": prefixes}


def main(argv: Optional[List[str]] = None) -> int:
    parser = arguments("scale", __doc__, timeout="seconds per phase (default 120 + 0.2 per event)")
    parser.add_argument("--events", type=int, default=10000, help="burst size (default 10000)")
    parser.add_argument("--warmup", type=int, default=500,
                        help="tasks the audit pool runs before its RSS is taken (default 500)")
    args = parser.parse_args(argv)
    if args.events < 10 or args.warmup < 1:
        parser.error("--events must be >= 10 and --warmup >= 1")
    timeout = args.timeout or 120.0 + 0.2 * args.events
    exit_on_sigterm()
    import redis
    from tests.servers.base import wait_for
    from tests.servers.stack import Processes
    stack = start_stack("scale", with_netbox=False)
    procs = None  # type: Optional[Processes]
    ok = False
    try:
        from novahooks.nova import hooks
        from novahooks.nova.outbox import Outbox
        from tasks import chains
        from tasks.app import app
        client = redis.Redis.from_url(stack.redis.url)
        outbox = Outbox(str(stack.outbox_path))
        procs = Processes(stack, progress=lambda line: log("  " + line))
        audit = procs.start_worker("audit")
        wait_for(lambda: "ready." in audit.log.read_text(errors="replace"), 120,
                 "audit worker", audit.proc, audit.log)
        procs.start_relay()

        log("1. hook -> outbox -> relay -> broker: %d build_instance post-hook calls"
            % args.events)
        vms = chaos_vms(args.events + 1, prefix="burst", first_octet=0)
        fire(hooks.BuildInstanceHook(), vms[:1])  # the relay is up and publishing
        until(lambda: client.llen(FIRST_QUEUE) >= 1, timeout, "the relay's first chain")
        client.delete(FIRST_QUEUE)
        vms = vms[1:]
        sampler = DepthSampler(client, outbox, 0.25)
        sampler.start()
        started = time.time()
        hook_times = fire(hooks.BuildInstanceHook(), vms)
        fired = time.time() - started
        until(lambda: client.llen(FIRST_QUEUE) >= args.events, timeout, "every chain queued")
        queued_in = time.time() - started
        relay_samples = sampler.stop()
        queued = queued_uuids(client)
        lost = len({vm.uuid for vm in vms} - set(queued))
        client.delete(FIRST_QUEUE)  # nothing consumes them here
        log("   fired in %.1f s, all queued after %.1f s, lost %d" % (fired, queued_in, lost))

        log("2. broker -> audit pool: %d warm-up then %d audit-only chains"
            % (args.warmup, args.events))
        events = [{"kind": "build", "uuid": vm.uuid, "hostname": vm.hostname,
                   "event_id": "scale-%d" % i, "emitted_at": time.time()}
                  for i, vm in enumerate(vms)]

        def publish(batch: List[Dict[str, Any]]) -> None:
            for event in batch:
                chains.build(app, event, start_at="audit.record").apply_async(retry=False)

        def drained() -> bool:
            depths = queue_depths(client, ("audit",))
            return depths["audit"] == 0 and depths["unacked"] == 0

        publish(events[:args.warmup])
        until(drained, timeout, "warm-up drained")
        rss_start = pool_rss_mb(procs)["audit"]
        sampler = DepthSampler(client, outbox, 0.5)
        sampler.start()
        t0 = time.time()
        publish(events)
        published_in = time.time() - t0
        until(drained, timeout, "burst drained")
        drained_in = time.time() - t0
        worker_samples = sampler.stop()
        time.sleep(1.0)
        rss_end = pool_rss_mb(procs)["audit"]
        keys = result_keys(client)
        conf = {"task_ignore_result": app.conf.task_ignore_result,
                "result_backend": app.conf.result_backend,
                "result_expires": str(app.conf.result_expires)}
        ok = lost == 0 and keys["celery_task_meta"] == 0
    finally:
        if procs is not None:
            procs.stop()
        stack.stop()
        cleanup(stack.workdir, ok)
    growth = ratio(rss_end - rss_start, rss_start)
    print(table(("burst of %d events" % args.events, "seconds", "events/s"),
                [("hook calls (outbox appends)", fired, args.events / fired),
                 ("hook call to chain queued, all", queued_in, args.events / queued_in),
                 ("audit chains published (celery)", published_in, args.events / published_in),
                 ("audit pool drained the burst", drained_in, args.events / drained_in)]))
    hook = latency(hook_times)
    print("hook p50 %.3f ms p99 %.3f ms during the burst; lost=%d" % (hook["p50_ms"],
                                                                       hook["p99_ms"], lost))
    print("audit pool RSS: %.1f MiB after %d warm-up tasks, %.1f MiB after %d more"
          % (rss_start, args.warmup, rss_end, args.events))
    print("result settings: %s; keys left in the broker/result db: %s"
          % (conf, keys["by_name"]))
    print("rss_growth=%.1f%%" % (growth * 100))
    print("result_keys=%d" % keys["celery_task_meta"])
    path = save("scale", {"events": args.events, "hook": hook, "lost": lost,
                          "fired_seconds": fired, "queued_seconds": queued_in,
                          "published_seconds": published_in, "drained_seconds": drained_in,
                          "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth": growth,
                          "result_keys": keys, "result_conf": conf,
                          "relay_depths": relay_samples, "worker_depths": worker_samples},
                args.json)
    log("results in %s" % path)
    return 1 if lost or keys["celery_task_meta"] else 0


if __name__ == "__main__":
    sys.exit(main())
