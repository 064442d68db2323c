"""What the bench scripts share: percentiles, tables, result files, the audit trail, the stack.

Imported by ``hook_overhead.py`` under Nova's Python 3.8 as well, so the module
level is standard library only and Python 3.6 syntax; everything that needs the
worker side (Celery, psutil, the stack) is imported inside the function using it.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STEP_QUEUES = ("ipam", "dns", "ldap", "inventory", "audit")
#: the queue of every build chain's first step (tasks/chains.py CREATE[0], written out: this
#: module stays standard library only): where a burst's chains wait when nothing consumes them
FIRST_QUEUE = "dns"


def log(line: str) -> None:
    print(line, flush=True)


def exit_on_sigterm() -> None:
    """SIGTERM (and SIGINT, ignored in a background job) unwind like Ctrl-C, so a
    script's ``finally`` stops every server it started."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


# --------------------------------------------------------------------------- statistics

def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; ``q`` in [0, 1]."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: the percentiles kept of every latency distribution, for bench/plot.py
CURVE = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)


def latency(samples: Sequence[float]) -> Dict[str, Any]:
    """p50/p99/max/mean in milliseconds of samples given in seconds, and the curve."""
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0  # noqa: E731
    return {"n": len(samples), "p50_ms": at(0.5), "p99_ms": at(0.99),
            "max_ms": ordered[-1] * 1000.0, "mean_ms": sum(samples) / len(samples) * 1000.0,
            "curve_ms": [[q, at(q)] for q in CURVE]}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain fixed-width table; floats get three decimals."""
    def cell(value: Any) -> str:
        return "%.3f" % value if isinstance(value, float) else str(value)
    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in body])


def cleanup(workdir: Path, ok: bool) -> None:
    """Remove a run's scratch directory, or keep it (logs) and say where when it failed."""
    import shutil
    if ok:
        shutil.rmtree(str(workdir), ignore_errors=True)
    else:
        log("logs kept in %s" % workdir)


def machine() -> Dict[str, Any]:
    """What the numbers were measured on: cores, memory, load, interpreter."""
    info = {"nproc": os.cpu_count(), "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  # type: Dict[str, Any]
    try:
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_mb"] = int(fh.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return info


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum`` (fewer measures nothing)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError("%d is below %d" % (value, minimum))
        return value
    return parse


def arguments(name: str, doc: str, timeout: Optional[str] = None,
              default_timeout: float = 0) -> argparse.ArgumentParser:
    """A bench script's parser with the options every script spells the same way: ``--json``
    (where :func:`save` writes, default bench/results/<name>.json) and, for a script that
    waits on workers, ``--timeout`` (``timeout`` is its help; 0 lets the script size it)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if timeout is not None:
        parser.add_argument("--timeout", type=float, default=default_timeout, help=timeout)
    parser.add_argument("--json", default=None,
                        help="results file (default bench/results/%s.json)" % name)
    return parser


def save(name: str, data: Dict[str, Any], path: Optional[str] = None) -> Path:
    """Write a script's results as JSON (for plot.py and RESULTS.md); returns the path."""
    target = Path(path) if path else RESULTS / ("%s.json" % name)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(data)
    payload["machine"] = machine()
    target.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return target


# --------------------------------------------------------------------------- audit trail

def audit_done(audit: Path, kinds: Sequence[str], uuids: Set[str]) -> Dict[str, Dict[str, Any]]:
    """"uuid:kind" -> the closing 'done' audit record of that instance's chain of that kind.

    Each chain ends with its audit record, written after every other backend, so
    the record's time minus the event's emission time is hook-call-to-last-record.
    """
    done = {}  # type: Dict[str, Dict[str, Any]]
    if not audit.exists():
        return done

    for line in audit.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn line is reported by `novahooks audit verify`, not here
        if record.get("stage") == "done" and record.get("kind") in kinds \
                and record.get("instance_uuid") in uuids:
            done["%s:%s" % (record["instance_uuid"], record["kind"])] = record
    return done


def finished(audit: Path, kinds: Sequence[str], uuids: Set[str]) -> Set[str]:
    """The instances whose chains of every kind in ``kinds`` wrote their closing record."""
    done = audit_done(audit, kinds, uuids)
    return {uuid for uuid in uuids if all("%s:%s" % (uuid, kind) in done for kind in kinds)}


def wait_done(audit: Path, kinds: Sequence[str], uuids: Set[str], timeout: float,
              progress: Optional[Callable[[int, int], None]] = None,
              interval: float = 0.5) -> Dict[str, Dict[str, Any]]:
    """Every uuid's chains of ``kinds`` done, or SystemExit naming how many were missing."""
    want = len(uuids) * len(kinds)
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        done = audit_done(audit, kinds, uuids)
        if len(done) != last and progress is not None:
            progress(len(done), want)
        last = len(done)
        if last >= want:
            return done
        if time.monotonic() > deadline:
            raise SystemExit("only %d of %d chains (%s) finished in %.0f s"
                             % (last, want, ",".join(kinds), timeout))
        time.sleep(interval)


# --------------------------------------------------------------------------- worker side

def module_at(name: str, commit: str, path: str, **names: Any) -> types.ModuleType:
    """A file of this repository as it was at ``commit``, loaded as a module of its own
    beside today's (a baseline measured in the same run); ``names`` replace its globals."""
    source = subprocess.run(["git", "show", "%s:%s" % (commit, path)], cwd=str(ROOT),
                            check=True, stdout=subprocess.PIPE,
                            universal_newlines=True).stdout
    module = types.ModuleType(name)
    module.__file__ = "%s@%s" % (path, commit)
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102
    module.__dict__.update(names)
    return module


def start_stack(prefix: str, with_netbox: bool = True, **config: Dict[str, str]) -> Any:
    """A private stack (Redis, slapd, BIND, NetBox) in a fresh directory, this process
    pointed at it; ``config`` overrides sections of its configuration file."""
    import tempfile
    from tests.servers.stack import Stack
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-%s-" % prefix))
    stack = Stack(workdir, with_netbox=with_netbox, progress=lambda line: log("  " + line)).start()
    try:
        if config:
            stack.write_config(**config)
        point_at(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def reconcile(config: Path, older_than: float) -> List[Dict[str, Any]]:
    """``novahooks reconcile --older-than N --json`` in a process of its own, as an
    operator's cron runs it: it publishes to the broker ``config`` names. Called in this
    process, ``tasks.operations.reconcile_stalled`` would publish through this process's
    Celery app, which stays bound to the broker of the first configuration it published
    with (in the suite: the session stack's, not a test's own broker)."""
    env = dict(os.environ, NOVAHOOKS_CONFIG=str(config))
    result = subprocess.run([sys.executable, "-m", "novahooks.cli", "reconcile",
                             "--older-than", str(older_than), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError("novahooks reconcile failed (%d): %s"
                           % (result.returncode, result.stderr[-2000:]))
    resumed: List[Dict[str, Any]] = json.loads(result.stdout or "[]")
    return resumed


def point_at(stack: Any) -> None:
    """Bind this process's settings, hooks and Celery app to ``stack``'s configuration."""
    point_at_config(stack.config_path)


def point_at_config(path: Path) -> None:
    """Bind this process's settings, hooks and Celery app to the configuration file ``path``."""
    import importlib
    os.environ["NOVAHOOKS_CONFIG"] = str(path)
    import celeryconfig
    from novahooks.nova import hooks
    from tasks import config as task_config
    from tasks.app import app
    task_config.settings.cache_clear()
    hooks.reset_outbox()
    app.config_from_object(importlib.reload(celeryconfig), force=True)


def pool_pids(procs: Any) -> Dict[str, List[int]]:
    """queue -> the pids of its worker pool's processes (main process first)."""
    import psutil
    pids = {}  # type: Dict[str, List[int]]
    for queue, proc in procs.workers.items():
        try:
            main = psutil.Process(proc.proc.pid)
            pids[queue] = [main.pid] + [c.pid for c in main.children(recursive=True)]
        except psutil.NoSuchProcess:
            pids[queue] = []
    return pids


def pool_rss_mb(procs: Any) -> Dict[str, float]:
    """queue -> resident memory of its whole pool (main process and children), in MiB."""
    import psutil
    rss = {}
    for queue, pids in pool_pids(procs).items():
        total = 0
        for pid in pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                pass
        rss[queue] = total / 1048576.0
    return rss


def queue_depths(client: Any, queues: Sequence[str] = STEP_QUEUES) -> Dict[str, int]:
    """Messages waiting per step queue, plus those held unacknowledged by workers."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    pipe.hlen("unacked")
    counts = pipe.execute()
    depths = dict(zip(queues, counts[:-1]))
    depths["unacked"] = counts[-1]
    return depths


class DepthSampler(threading.Thread):
    """Queue depths and the outbox's depth every ``interval`` seconds, for the plot."""

    def __init__(self, client: Any, outbox: Any, interval: float = 1.0) -> None:
        super().__init__(name="depth-sampler", daemon=True)
        self.client, self.outbox, self.interval = client, outbox, interval
        self.samples: List[Dict[str, Any]] = []
        self.started = time.time()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            sample: Dict[str, Any] = {"t": round(time.time() - self.started, 3)}
            try:
                sample.update(queue_depths(self.client))
                sample["outbox"] = self.outbox.depth()[0]
            except Exception as exc:  # noqa: BLE001 - a missed sample is not a failure
                sample["error"] = str(exc)
            self.samples.append(sample)
            self._halt.wait(self.interval)

    def stop(self) -> List[Dict[str, Any]]:
        self._halt.set()
        self.join(10)
        return self.samples


def step_log_lines(logs: Path) -> List[Dict[str, Any]]:
    """Every step outcome line the worker pools logged (JSON, one per task run)."""
    lines = []
    for path in sorted(logs.glob("worker-*.log")):
        for text in path.read_text(errors="replace").splitlines():
            if not text.startswith("{") or '"step"' not in text:
                continue
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if "duration_ms" in record:
                lines.append(record)
    return lines


def step_overhead(lines: Sequence[Dict[str, Any]],
                  uuids: Optional[Set[str]] = None) -> List[Dict[str, Any]]:
    """Per step, means over its successful runs: the task's time, its backend calls, its
    wait for the per-instance lock, and the rest (ledger bookkeeping, validation, metrics:
    what the step costs beyond its backend)."""
    by_step = {}  # type: Dict[str, List[Dict[str, Any]]]
    for line in lines:
        if line.get("outcome") != "ok" or "backend_ms" not in line:
            continue
        if uuids is not None and line.get("instance_uuid") not in uuids:
            continue
        by_step.setdefault(line["step"], []).append(line)
    rows = []
    for step in sorted(by_step):
        runs = by_step[step]
        task, backend, lock = (sum(r.get(key, 0.0) for r in runs) / len(runs)
                               for key in ("duration_ms", "backend_ms", "lock_wait_ms"))
        rows.append({"step": step, "runs": len(runs), "task_ms": task, "backend_ms": backend,
                     "lock_wait_ms": lock, "overhead_ms": task - backend - lock})
    return rows


def hop_overhead(lines: Sequence[Dict[str, Any]], chains: Dict[str, Dict[str, Any]],
                 steps: int) -> List[float]:
    """Per finished chain: (hook-to-last-record time minus the time its tasks ran) / hops,
    in ms: what the relay, the broker and Celery's dispatch add between steps."""
    ran = {}  # type: Dict[str, float]
    for line in lines:
        if line.get("outcome") == "ok" and line.get("event_id"):
            ran[line["event_id"]] = ran.get(line["event_id"], 0.0) + line["duration_ms"]
    hops = []
    for record in chains.values():
        if record.get("event_id") in ran:
            total = (record["time"] - record["emitted_at"]) * 1000.0
            hops.append((total - ran[record["event_id"]]) / steps)
    return hops
