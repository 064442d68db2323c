"""What a build_instance post-hook call costs inside Nova, against a raw Redis LPUSH.

Run with the Python 3.8 interpreter of the Nova 21.2.4 venv (``tests/nova/venv.py``
builds it), under eventlet like nova-compute, with a real ``nova.objects.Instance``::

    V=~/.cache/novahooks/nova-21.2.4-py38
    $V/bin/pip install -c $V/nova-ussuri-upper-constraints.txt redis   # 3.4.1, Ussuri's pin
    $V/bin/python bench/hook_overhead.py [--quick]

Both sides run in the same process, alternating in blocks, against a private
Redis on loopback: the hook appends to the SQLite outbox (WAL,
synchronous=NORMAL), the baseline LPUSHes the same JSON with redis-py 3.4.1.
Prints p50/p99 for each and ``p99_ratio=R`` (hook p99 / LPUSH p99).

The third row is the naive design: a synchronous hook that makes the five
registrations inline with the same drivers the workers use, against real
Redis, slapd, BIND and NetBox (``bench/inline.py``). The drivers need the
worker side (Python >= 3.11), so that row is measured by the project's
``.venv`` interpreter in a child process, which starts a private stack (or uses
``--config``'s running backends), over ``--sync-calls`` calls (default 50: a
call takes seconds). ``sync_over_hook_p99=R`` is its p99 over the hook's p99.
``--quick`` (under a minute) makes 3,000 hook and LPUSH calls and 5 synchronous
ones.
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, cleanup, latency, percentile, save, table  # noqa: E402


def nova_instance():
    from nova import objects
    from nova.network import model
    objects.register_all()
    vif = model.VIF(id="5e1c6a3a-2a4e-4a8e-9a57-3f3e7b0c1d2e", address="fa:16:3e:11:22:33",
                    network=model.Network(id="n1", label="private", subnets=[
                        model.Subnet(cidr="10.20.0.0/16", ips=[
                            model.FixedIP(address="10.20.0.5", version=4)]),
                        model.Subnet(cidr="2001:db8:20::/64", ips=[
                            model.FixedIP(address="2001:db8:20::5", version=6)])]))
    flavor = objects.Flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                            ephemeral_gb=0, swap=0, flavorid="2")
    return objects.Instance(
        uuid="0b8e1c4e-94f6-4bf3-9d2c-6f7f2a1d3c4b", hostname="web-1", display_name="web-1",
        project_id="p1", user_id="u1", availability_zone="nova", host="compute1",
        vm_state="active", task_state=None, flavor=flavor, image_ref="img", os_type="linux",
        metadata={"role": "web"}, deleted=False,
        info_cache=objects.InstanceInfoCache(network_info=model.NetworkInfo([vif])))


def synchronous_hook(calls, config, python):
    """The naive hook's timings, from bench/inline.py under the worker-side interpreter."""
    argv = [python, "-m", "bench.inline", "--calls", str(calls)]
    if config:
        argv += ["--config", config]
    result = subprocess.run(argv, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit("the synchronous hook run failed (%s):\n%s"
                         % (" ".join(argv), (result.stdout + result.stderr)[-3000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description="build_instance post-hook cost vs raw LPUSH "
                                                 "vs a synchronous hook")
    parser.add_argument("--quick", action="store_true",
                        help="3,000 hook calls and 5 synchronous ones (under a minute)")
    parser.add_argument("--calls", type=int, default=0, help="hook and LPUSH calls "
                        "(default 10,000)")
    parser.add_argument("--sync-calls", type=int, default=0,
                        help="synchronous-hook calls (default 50, --quick 5; 0 with --no-sync)")
    parser.add_argument("--no-sync", action="store_true", help="skip the synchronous hook")
    parser.add_argument("--config", default=None,
                        help="novahooks.conf of running backends for the synchronous hook "
                             "(default: it starts a private stack)")
    parser.add_argument("--python", default=os.environ.get(
        "NOVAHOOKS_BENCH_PYTHON", str(ROOT / ".venv" / "bin" / "python")),
        help="worker-side interpreter for the synchronous hook (default .venv)")
    parser.add_argument("--json", default=None, help="results file "
                        "(default bench/results/hook_overhead.json)")
    args = parser.parse_args()
    calls = args.calls or (3000 if args.quick else 10000)
    sync_calls = 0 if args.no_sync else (args.sync_calls or (5 if args.quick else 50))
    if calls < 100:
        parser.error("--calls must be >= 100")
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-"))
    os.environ["NOVAHOOKS_OUTBOX_PATH"] = str(workdir / "outbox.sqlite")
    from tests.servers.redis import start_redis
    import redis
    from novahooks.nova import hooks
    from novahooks.nova.extract import cached_addresses, instance_fields
    from novahooks.event import new_event

    server = start_redis(workdir / "redis")
    ok = False
    try:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        instance = nova_instance()
        hook = hooks.BuildInstanceHook()
        nova_args = (object(), object(), instance, {}, object(), {}, None, [], None, None, None,
                     "node1", None, None, None)
        payload = new_event("build", instance.uuid, instance.hostname,
                            addresses=cached_addresses(instance),
                            **instance_fields(instance)).to_json()
        for _ in range(200):  # warm both paths: first connection, first outbox open
            hook.post("active", *nova_args)
            client.lpush("bench", payload)
        hook_times, lpush_times = [], []
        block = 500
        clock = time.perf_counter
        for start in range(0, calls, block):
            for _ in range(min(block, calls - start)):
                t0 = clock()
                hook.post("active", *nova_args)
                hook_times.append(clock() - t0)
            for _ in range(min(block, calls - start)):
                t0 = clock()
                client.lpush("bench", payload)
                lpush_times.append(clock() - t0)
        ok = True
    finally:
        server.stop()
        cleanup(workdir, ok)
    sync = synchronous_hook(sync_calls, args.config, args.python) if sync_calls else None
    results = {"hook": latency(hook_times), "lpush": latency(lpush_times), "calls": calls,
               "payload_bytes": len(payload), "redis_py": redis.__version__}
    rows = [("build_instance post-hook (outbox)", results["hook"], calls),
            ("raw redis-py %s LPUSH, same JSON" % redis.__version__, results["lpush"], calls)]
    if sync is not None:
        results["sync"] = sync
        rows.append(("synchronous hook, 5 backends inline", sync["hook"], sync["calls"]))
    print("calls=%d payload_bytes=%d python=%s" % (calls, len(payload), sys.version.split()[0]))
    print(table(("per call", "calls", "p50 ms", "p99 ms", "x hook p99"),
                [(name, n, stats["p50_ms"], stats["p99_ms"],
                  stats["p99_ms"] / results["hook"]["p99_ms"]) for name, stats, n in rows]))
    if sync is not None:
        print("synchronous hook measured with python %s over %d calls; per backend p50 ms: %s"
              % (sync["python"], sync["calls"], ", ".join(
                  "%s %.1f" % (b, s["p50_ms"]) for b, s in sorted(sync["backends"].items()))))
        results["sync_over_hook_p99"] = sync["hook"]["p99_ms"] / results["hook"]["p99_ms"]
        print("sync_over_hook_p99=%.0f" % results["sync_over_hook_p99"])
    results["p50_ratio"] = percentile(hook_times, 0.5) / percentile(lpush_times, 0.5)
    results["p99_ratio"] = percentile(hook_times, 0.99) / percentile(lpush_times, 0.99)
    print("p50_ratio=%.2f" % results["p50_ratio"])
    print("p99_ratio=%.2f" % results["p99_ratio"])
    print("results in %s" % save("hook_overhead", results, args.json))


if __name__ == "__main__":
    main()
