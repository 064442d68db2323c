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
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


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


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2,000 calls instead of 10,000")
    parser.add_argument("--calls", type=int, default=0)
    args = parser.parse_args()
    calls = args.calls or (2000 if args.quick else 10000)
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-"))
    os.environ["NOVAHOOKS_OUTBOX_PATH"] = str(workdir / "outbox.sqlite")
    from novahooks.servers.redis import start_redis
    import redis
    from novahooks.nova import hooks
    from novahooks.nova.extract import cached_addresses, instance_fields
    from novahooks.nova.event import new_event

    server = start_redis(workdir / "redis")
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
        rows = [("build_instance post-hook (outbox)", hook_times),
                ("raw redis-py LPUSH, same JSON", lpush_times)]
        print("calls=%d payload_bytes=%d python=%s" % (calls, len(payload),
                                                      sys.version.split()[0]))
        print("%-36s %10s %10s" % ("", "p50 ms", "p99 ms"))
        for name, samples in rows:
            print("%-36s %10.3f %10.3f" % (name, percentile(samples, 0.5) * 1000,
                                           percentile(samples, 0.99) * 1000))
        print("p50_ratio=%.2f" % (percentile(hook_times, 0.5) / percentile(lpush_times, 0.5)))
        print("p99_ratio=%.2f" % (percentile(hook_times, 0.99) / percentile(lpush_times, 0.99)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
