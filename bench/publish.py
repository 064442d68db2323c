"""Publishing chains: events from the outbox to the broker as Celery chains, vs raw LPUSH.

One process, one private Redis on loopback, the same build event JSON for
every path, measured side by side in alternating blocks so the machine's load
falls on all of them alike:

* ``celery chain.apply_async`` - what the relay did before: canvas, task
  message, ``saferepr``, kombu, a new redis-py client and a ``task-sent`` event
  per publish (two round trips);
* ``template publish`` - ``tasks.publisher.ChainPublisher``: Celery's own
  messages recorded once per event kind, the event and fresh ids put in;
  alone (two round trips), inside ``producer.batch()`` one event at a time (what
  the relay does with one pending event: one round trip) and in batches of 200
  as the relay sends a backlog (the per-event figure is the batch's time
  divided by its size);
* ``raw LPUSH`` of the event JSON with one redis-py client, alone and
  pipelined in batches of the same size.

Then the relay itself: ``Relay.publish_pending`` draining an outbox of
``--relay-events`` events (SQLite reads and deletes included) against a loop
that reads the same outbox, LPUSHes each event and deletes it.

Prints p50/p99 per event, events/s and the ratios to raw LPUSH, and
``publish_ratio=R`` (relay path events/s over raw LPUSH events/s, inverted so
that R is "times slower"; target <= 3). ``--profile`` adds cProfile's top
functions for the old and the new path. Run with the project's .venv::

    .venv/bin/python bench/publish.py [--events 5000] [--profile]
"""

import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (FIRST_QUEUE,  # noqa: E402
                          arguments, cleanup, exit_on_sigterm, latency, log, point_at_config,
                          save, table)

BATCH = 200  # the relay's default [relay] batch


def build_event_json() -> str:
    from bench.chaos import chaos_vms
    from bench.inline import event_of
    return event_of(chaos_vms(1, prefix="pub", first_octet=230)[0]).to_json()


def timed_block(samples: List[float], count: int, call: Callable[[], None]) -> None:
    clock = time.perf_counter
    for _ in range(count):
        t0 = clock()
        call()
        samples.append(clock() - t0)


def batched_block(samples: List[float], count: int, size: int,
                  call: Callable[[int], None]) -> None:
    """``call(n)`` sends n events at once; each event is charged the batch's time / n."""
    clock = time.perf_counter
    for start in range(0, count, size):
        n = min(size, count - start)
        t0 = clock()
        call(n)
        share = (clock() - t0) / n
        samples.extend([share] * n)


def profile(call: Callable[[], None], count: int, top: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def relay_drain(workdir: Path, text: str, count: int, raw_client: Any) -> Dict[str, float]:
    """events/s: the relay draining ``count`` events vs read-LPUSH-delete of the same outbox."""
    from novahooks.nova.outbox import Outbox
    from tasks.relay import Relay
    from novahooks.settings import load_settings
    settings = load_settings()
    rates = {}
    for name in ("relay", "raw"):
        outbox = Outbox(str(workdir / ("outbox-%s.sqlite" % name)))
        for _ in range(count):
            outbox.append("0b8e1c4e-94f6-4bf3-9d2c-6f7f2a1d3c4b", "build", text)
        started = time.perf_counter()
        if name == "relay":
            relay = Relay(settings, outbox=outbox)
            while relay.publish_pending():
                pass
        else:
            while True:
                batch = outbox.pending(BATCH)
                if not batch:
                    break
                for item in batch:
                    raw_client.lpush("raw-relay", item.body)
                outbox.remove([item.seq for item in batch])
        rates[name] = count / (time.perf_counter() - started)
        if outbox.depth()[0]:
            raise SystemExit("%s left %d events in its outbox" % (name, outbox.depth()[0]))
        outbox.close()
    return rates


def main(argv: Optional[List[str]] = None) -> int:
    parser = arguments("publish", __doc__)
    parser.add_argument("--events", type=int, default=5000, help="events per path "
                        "(default 5000)")
    parser.add_argument("--relay-events", type=int, default=0,
                        help="events for the relay drain (default: --events)")
    parser.add_argument("--block", type=int, default=BATCH * 2,
                        help="events per alternating block (default 400)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args(argv)
    if args.events < 10 or args.block < 1:
        parser.error("--events must be >= 10 and --block >= 1")
    exit_on_sigterm()
    from tests.servers.redis import start_redis
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-publish-"))
    server = start_redis(workdir / "redis")
    ok = False
    try:
        config = workdir / "novahooks.conf"
        config.write_text("[broker]\nurl = %s\nconnect_timeout = 3\n[outbox]\npath = %s\n"
                          % (server.url, workdir / "outbox.sqlite"))
        point_at_config(config)
        import redis
        from celery import Celery
        from tasks import chains
        from tasks.app import app
        from tasks.publisher import ChainPublisher
        text = build_event_json()
        event = json.loads(text)
        client = redis.Redis.from_url(server.url)
        publisher = ChainPublisher(app)
        # the same, for a site that turns Celery's task-sent events off (Flower then
        # learns of a task when a worker receives it, not when it is sent)
        quiet_app = Celery("novahooks-bench-quiet")
        quiet_app.config_from_object("celeryconfig")
        quiet_app.conf.task_send_sent_event = False
        quiet = ChainPublisher(quiet_app)
        samples = {}  # type: Dict[str, List[float]]
        with app.producer_or_acquire() as producer, \
                quiet_app.producer_or_acquire() as quiet_producer:
            def chain_apply() -> None:
                chains.build(app, json.loads(text)).apply_async(retry=False)

            def template_one() -> None:
                publisher.publish(producer, "build", text, retry=False)

            def template_batch(n: int) -> None:
                with producer.batch(2 * n + 1):
                    for _ in range(n):
                        publisher.publish(producer, "build", text, retry=False)

            def quiet_batch(n: int) -> None:
                with quiet_producer.batch(n + 1):
                    for _ in range(n):
                        quiet.publish(quiet_producer, "build", text, retry=False)

            def lpush_one() -> None:
                client.lpush("raw", text)

            def lpush_batch(n: int) -> None:
                pipe = client.pipeline(transaction=False)
                for _ in range(n):
                    pipe.lpush("raw", text)
                pipe.execute()

            single = [("celery chain.apply_async (relay before)", chain_apply),
                      ("template publish, one event", template_one),
                      ("relay path, one event per batch", lambda: template_batch(1)),
                      ("raw LPUSH, one event", lpush_one)]
            batched = [("template publish in relay batches of %d" % BATCH, template_batch),
                       ("the same, task_send_sent_event off", quiet_batch),
                       ("raw LPUSH pipelined in batches of %d" % BATCH, lpush_batch)]
            for _, call in single:  # warm: connections, templates, declarations
                timed_block([], 50, call)
            for _, call in batched:
                batched_block([], BATCH, BATCH, call)
            walls = {}  # type: Dict[str, float]
            for start in range(0, args.events, args.block):
                n = min(args.block, args.events - start)
                for name, call in single:
                    t0 = time.perf_counter()
                    timed_block(samples.setdefault(name, []), n, call)
                    walls[name] = walls.get(name, 0.0) + time.perf_counter() - t0
                for name, call in batched:
                    t0 = time.perf_counter()
                    batched_block(samples.setdefault(name, []), n, BATCH, call)
                    walls[name] = walls.get(name, 0.0) + time.perf_counter() - t0
            profiles = {}
            if args.profile:
                profiles["celery chain.apply_async"] = profile(chain_apply, 500)
                profiles["template publish in batches"] = profile(
                    lambda: template_batch(BATCH), max(1, 2000 // BATCH))
        first_depth = client.llen(FIRST_QUEUE)
        # every chain's first message: both single paths and the batched one, warm-ups too
        expected = 5 * args.events + 150 + 2 * BATCH
        relay_rates = relay_drain(workdir, text, args.relay_events or args.events, client)
        for name, text_ in profiles.items():
            print("---- cProfile: %s (top by own time)" % name)
            print(text_)
        base = latency(samples["raw LPUSH, one event"])
        base_rate = args.events / walls["raw LPUSH, one event"]
        rows, results = [], {}
        for name in samples:
            stats = latency(samples[name])
            rate = args.events / walls[name]
            stats.update(events_per_s=rate, p50_ratio=stats["p50_ms"] / base["p50_ms"],
                         p99_ratio=stats["p99_ms"] / base["p99_ms"],
                         rate_ratio=base_rate / rate)
            results[name] = stats
            rows.append((name, stats["p50_ms"], stats["p99_ms"], rate, stats["p50_ratio"],
                         stats["p99_ratio"], stats["rate_ratio"]))
        print("events=%d per path, payload_bytes=%d, python=%s" % (args.events, len(text),
                                                                   sys.version.split()[0]))
        print(table(("per event, to the broker", "p50 ms", "p99 ms", "events/s",
                     "p50 x LPUSH", "p99 x LPUSH", "slower x"), rows))
        print()
        relay_ratio = relay_rates["raw"] / relay_rates["relay"]
        print(table(("draining an outbox of %d events" % (args.relay_events or args.events),
                     "events/s"),
                    [("novahooks relay (template chains, batched)", relay_rates["relay"]),
                     ("read, raw LPUSH, delete", relay_rates["raw"])]))
        old = results["celery chain.apply_async (relay before)"]
        new = results["template publish in relay batches of %d" % BATCH]
        print("chain_apply_async_p99_ratio=%.2f" % old["p99_ratio"])
        print("relay_drain_ratio=%.2f" % relay_ratio)
        print("publish_ratio=%.2f" % new["rate_ratio"])
        if first_depth < expected:
            raise SystemExit("only %d of %d chain messages reached the %s queue"
                             % (first_depth, expected, FIRST_QUEUE))
        path = save("publish", {"events": args.events, "payload_bytes": len(text),
                                "per_event": results, "relay_drain": relay_rates,
                                "relay_drain_ratio": relay_ratio,
                                "publish_ratio": new["rate_ratio"], "profiles": profiles,
                                "event_fields": sorted(event)}, args.json)
        log("results in %s" % path)
        ok = True
    finally:
        server.stop()
        cleanup(workdir, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
