"""Faults on several hosts: the deployment of bench/multihost/hosts.py, a burst, one fault.

Brings up the five hosts (two compute hosts with their own outbox and relay, two
worker hosts with every step's pool, RabbitMQ and the PostgreSQL ledger on the
svc host), fires N VM creates through each compute host's hooks, applies one
fault in the middle of the burst, and waits until every VM's chains are done
(stalled ones reconciled, as an operator's cron would). Then it asks NetBox,
slapd and BIND what they hold for each VM: 0 lost and 0 duplicated is the bar,
and the time from the end of the fault to the last VM done is the number.

Faults (``--fault``, several allowed, run one after the other on one deployment):

* ``worker-kill``: SIGKILL every process of worker1 (its pools and their children),
  bring it back after ``--down`` seconds (default 20);
* ``broker-cut``: worker1's cable down for ``--cut`` seconds (default 60), the host
  cut from broker and ledger alike;
* ``ledger-cut``: worker1 cannot reach the ledger's address, the broker still can;
* ``broker-stop``: RabbitMQ's port on the svc host refuses and every connection to
  it drops, for ``--broker-down`` seconds (default 30), for every host;
* ``relay-kill``: compute1's relay SIGKILLed for ``--relay-down`` seconds (default
  60) while its hooks keep firing;
* ``clock-skew``: worker1's pools restarted with their clock ``--skew`` seconds behind
  (default 300; libfaketime, monotonic clocks left alone) for the whole burst and until
  every VM converged, then restarted with the true time;
* ``chaos``: one worker pool SIGKILLed every ``--kill-every`` seconds (default 3), round
  robin over both worker hosts' pools, each restarted at once, until every VM is done
  (or half the timeout). Chains are reconciled as in every scenario, when no VM got done
  for ``--stalled-after`` seconds (as an operator's cron would): with Redis, a message a
  killed worker had taken off the queue but not yet marked unacknowledged is lost to
  the broker and only the ledger's open chain brings it back.

``--broker redis`` runs the same deployment with the stack's Redis as the broker
(routed through the svc host like RabbitMQ; ``broker-stop`` stops that route).
Each scenario also reports CPU seconds per host (every process of its namespace,
sampled) and for the rest of the machine (the servers, this process, other work).

    .venv/bin/python bench/multihost/faults.py --events 300 --fault worker-kill
    .venv/bin/python bench/multihost/faults.py --broker redis --events 1000 --fault chaos
    .venv/bin/python bench/multihost/faults.py --events 100 --fault broker-cut \\
        --fault broker-stop --json bench/results/multihost.json

Root only (namespaces). The last line is ``faults=... lost=L duplicated=D``; the
exit code is 1 if anything was lost, duplicated or parked as poison, or a VM did not
converge, 2 if the run could not start.
"""

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.chaos import chaos_vms, compare, count_records, kill_pool, poison_parked  # noqa: E402
from bench.multihost.hosts import HOSTS, Hosts, Router, fqdn  # noqa: E402
from tests.servers.base import Process, free_port  # noqa: E402
from tests.servers.stack import POOLS, Stack  # noqa: E402
from tasks.simulate import Vm  # noqa: E402

COMPUTE = ("compute1", "compute2")
WORKERS = ("worker1", "worker2")
#: the ledger has an address of its own on the svc host, so it can be cut alone
LEDGER_ADDRESS = "127.77.0.11"
FAULTS = ("worker-kill", "broker-cut", "ledger-cut", "broker-stop", "relay-kill",
          "clock-skew", "chaos")
BROKERS = ("rabbitmq", "redis")
CLOCK_PROBE = "import time; print(time.time())"

FIRE = r"""
import json, sys, time
from tasks.simulate import Vm, create
specs = json.loads(sys.argv[1])
pause = float(sys.argv[2])
for hostname, uuid, address, mac in specs:
    create(Vm(hostname, ((address, mac),), uuid=uuid))
    time.sleep(pause)
"""

Log = Callable[[str], None]


class Deployment(object):
    """The servers, the hosts and every process on them, started and stopped as one."""

    def __init__(self, workdir: Path, log: Log, broker: str = "rabbitmq") -> None:
        self.workdir = workdir
        self.log = log
        self.broker = broker
        #: host -> seconds its clock is off (a worker host started under libfaketime)
        self.skew: Dict[str, float] = {h: 0.0 for h in WORKERS}
        self.hosts = Hosts()
        self.router: Optional[Router] = None
        self.stack: Any = None
        self.vhost: Any = None
        self.database = "novahooks_mh_%s" % uuid.uuid4().hex[:8]
        self.configs: Dict[str, Path] = {}
        self.workers: Dict[str, Dict[str, Process]] = {h: {} for h in WORKERS}
        self.relays: Dict[str, Process] = {}

    # ----------------------------------------------------------------- start and stop

    def start(self) -> "Deployment":
        from tests.servers.rabbitmq import private_vhost
        if self.broker == "rabbitmq":
            self.vhost = private_vhost("novahooks-mh")
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", self.database],
                       check=True)
        # With Redis as the broker it is the stack's own (password-protected) redis-server.
        self.stack = Stack(self.workdir / "servers", progress=lambda line: self.log("  " + line),
                           broker_url=self.vhost.url if self.vhost is not None else None)
        self.stack.start()
        self.hosts.up()
        subprocess.run(self.hosts.argv("svc", ["ip", "addr", "add", LEDGER_ADDRESS + "/24",
                                               "dev", "eth0"]), check=True)
        self.router = Router("svc")
        self.router.start()
        self.router.add("broker", *((5672, 5672) if self.vhost is not None else
                                    (self.stack.redis.port, self.stack.redis.port)))
        self.router.add("postgresql", 5432, 5432, listen_host=LEDGER_ADDRESS)
        # The backends answer every host on its own loopback (what is tested here is the
        # broker and the ledger across hosts; NetBox, slapd and BIND stay reachable).
        for host in COMPUTE + WORKERS:
            netbox_port = int(self.stack.netbox.url.rsplit(":", 1)[1])
            for name, port in (("netbox", netbox_port), ("slapd", self.stack.slapd.port),
                               ("bind", self.stack.bind.port)):
                self.router.add("%s@%s" % (name, host), port, port, on=host,
                                listen_host="127.0.0.1")
        self._configs()
        for host in WORKERS:
            self.start_workers(host)
        for host in COMPUTE:
            self.start_relay(host)
        self.wait_workers(WORKERS)
        self.log("hosts up:\n" + self.hosts.status())
        return self

    def _configs(self) -> None:
        """Each host's novahooks.conf, as an operator writes it: names, not addresses."""
        if self.vhost is not None:
            broker = "amqp://guest@%s:5672/%s" % (fqdn("svc"), self.vhost.url.rsplit("/", 1)[1])
        else:  # the password stays in the stack's secret file ([broker] password_file)
            broker = "redis://%s:%d/0" % (fqdn("svc"), self.stack.redis.port)
        ledger = "postgresql://postgres@ledger.%s:5432/%s" % ("nh.test", self.database)
        for host in COMPUTE + WORKERS:
            path = self.workdir / host / "novahooks.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stack.write_config(broker={"url": broker}, ledger={"url": ledger},
                                    outbox={"path": str(path.parent / "outbox.sqlite")})
            shutil.copy(str(self.stack.config_path), str(path))
            self.configs[host] = path
        # this process (counting, reconcile) sits on the machine itself
        self.stack.write_config(ledger={"url": "postgresql://postgres@127.0.0.1:5432/%s"
                                        % self.database})
        for host in HOSTS:
            hosts_file = Path("/etc/netns/nh-%s/hosts" % host)
            hosts_file.write_text(hosts_file.read_text() + "%s ledger.nh.test ledger\n"
                                  % LEDGER_ADDRESS)

    def env(self, host: str) -> Dict[str, str]:
        env = dict(os.environ)
        env["NOVAHOOKS_CONFIG"] = str(self.configs[host])
        env["PYTHONPATH"] = str(ROOT)
        return env

    @staticmethod
    def faketime_lib() -> str:
        """The preload library vendored by the ``libfaketime`` wheel (./worker[bench]).

        Debian 12's libfaketime 0.9.10 is not used: with monotonic clocks left true, every
        ``time.sleep`` of Python 3.11 fails there with EINVAL (its absolute
        ``clock_nanosleep``), which stops a Celery pool dead; the wheel's build does not.
        """
        try:
            import libfaketime
        except ImportError:
            raise RuntimeError("clock-skew needs the libfaketime wheel: "
                               "pip install './worker[bench]'") from None
        return str(Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" /
                   "libfaketime.so.1")

    def clock_env(self, host: str) -> Dict[str, str]:
        """The host's environment, its clock moved by ``self.skew[host]`` seconds: wall
        time only (time(), gettimeofday, CLOCK_REALTIME); monotonic clocks stay true, as
        on a host whose NTP is off but whose timers run."""
        env = self.env(host)
        if self.skew.get(host):
            env["LD_PRELOAD"] = self.faketime_lib()
            env["FAKETIME"] = "%+d" % self.skew[host]
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        return env

    def measured_skew(self, host: str) -> float:
        """What a process on ``host`` reads as the time, minus the true time."""
        before = time.time()
        out = subprocess.run(self.hosts.argv(host, [sys.executable, "-c", CLOCK_PROBE]),
                             env=self.clock_env(host), stdout=subprocess.PIPE, check=True,
                             universal_newlines=True).stdout
        return float(out) - (before + time.time()) / 2

    def start_workers(self, host: str) -> None:
        for queue in POOLS:
            self.start_worker(host, queue)

    def start_worker(self, host: str, queue: str) -> None:
        logs = self.workdir / host / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self.clock_env(host)
        env["NOVAHOOKS_METRICS_WORKER_PORT"] = str(free_port())
        env["NOVAHOOKS_METRICS_MULTIPROC_DIR"] = str(self.workdir / host / "metrics")
        self.workers[host][queue] = Process("%s-%s" % (host, queue), self.hosts.argv(host, [
            sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-Q", queue,
            "-c", str(POOLS[queue]), "-n", "%s@%s" % (queue, fqdn(host)),
            "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]), logs / ("worker-%s.log" % queue), env=env,
            cwd=self.workdir / host)

    def restart_workers(self, host: str, skew: float) -> None:
        """Warm shutdown of the host's pools (running tasks finish), then start them again
        with the clock ``skew`` seconds off."""
        for proc in self.workers[host].values():
            proc.stop(signal.SIGTERM, timeout=60)
        self.skew[host] = skew
        self.start_workers(host)
        self.wait_workers([host])

    def wait_workers(self, hosts: Sequence[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for host in hosts:
            for queue, proc in self.workers[host].items():
                while "ready." not in proc.log.read_text(errors="replace"):
                    if time.monotonic() > deadline or proc.proc.poll() is not None:
                        raise RuntimeError("%s %s pool not ready: %s" % (
                            host, queue, proc.log.read_text(errors="replace")[-2000:]))
                    time.sleep(0.5)

    def start_relay(self, host: str) -> None:
        logs = self.workdir / host / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self.env(host)
        env["NOVAHOOKS_METRICS_RELAY_PORT"] = str(free_port())
        self.relays[host] = Process("%s-relay" % host, self.hosts.argv(host, [
            sys.executable, "-m", "novahooks.cli", "relay"]), logs / "relay.log", env=env,
            cwd=self.workdir / host)

    def kill_host(self, host: str) -> int:
        """Every process of the host SIGKILLed at once, as when it loses power."""
        killed = self.hosts.kill_all("nh-" + host, signal.SIGKILL)
        for proc in list(self.workers.get(host, {}).values()) + (
                [self.relays[host]] if host in self.relays else []):
            try:
                proc.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            proc._fh.close()
        return len(killed)

    def stop(self) -> None:
        for host in WORKERS:
            for proc in self.workers[host].values():
                proc.stop(signal.SIGTERM, timeout=20)
        for proc in self.relays.values():
            proc.stop(signal.SIGINT)
        if self.router is not None:
            self.router.stop()
        self.hosts.down()
        if self.stack is not None:
            self.stack.stop()
        if self.vhost is not None:
            self.vhost.stop()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force",
                        self.database], check=False)

    # ----------------------------------------------------------------- a burst

    def fire(self, host: str, vms: Sequence[Vm], pause: float) -> subprocess.Popen:
        specs = [(vm.hostname, vm.uuid, vm.addresses[0][0], vm.addresses[0][1]) for vm in vms]
        return subprocess.Popen(self.hosts.argv(host, [
            sys.executable, "-c", FIRE, json.dumps(specs), str(pause)]), env=self.env(host),
            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def backlog(self) -> Dict[str, int]:
        """Events still in each compute host's outbox."""
        from novahooks.nova.outbox import Outbox
        return {host: Outbox(str(self.workdir / host / "outbox.sqlite")).depth()[0]
                for host in COMPUTE}


# --------------------------------------------------------------------------- faults

def status_seen(dep: Deployment, host: str = "compute1") -> Dict[str, Any]:
    """What an operator on ``host`` sees: ``novahooks status --json``, in short."""
    result = subprocess.run(dep.hosts.argv(host, [
        sys.executable, "-m", "novahooks.cli", "status", "--json"]), env=dep.env(host),
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=120)
    seen: Dict[str, Any] = {"host": host, "exit": result.returncode}
    try:
        report = json.loads(result.stdout)
    except ValueError:
        seen["error"] = (result.stderr.strip().splitlines() or ["(nothing)"])[-1][:300]
        return seen
    seen.update({key: report.get(key) for key in ("queues", "unconsumed", "dead_letters")})
    seen["workers"] = len(report.get("workers") or [])
    seen["outbox_depth"] = (report.get("outbox") or {}).get("depth")
    seen["relays"] = len(report.get("relays") or [])
    return seen


def _during(dep: Deployment, seconds: float, seen: Dict[str, Any]) -> None:
    """Wait out a fault, looking at ``novahooks status`` half-way through."""
    time.sleep(seconds / 2)
    seen["status_during"] = status_seen(dep)
    time.sleep(max(0.0, seconds / 2 - 1))


def apply(fault: str, dep: Deployment, args: argparse.Namespace, log: Log) -> Dict[str, Any]:
    """Run one fault (it returns when the fault is over); what it did, with times."""
    router = dep.router
    assert router is not None
    started = time.monotonic()
    seen: Dict[str, Any] = {}
    if fault == "worker-kill":
        killed = dep.kill_host("worker1")
        log("  worker1: %d processes SIGKILLed" % killed)
        _during(dep, args.down, seen)
        dep.start_workers("worker1")
        dep.wait_workers(["worker1"])
        return dict(seen, killed_processes=killed, down_s=args.down,
                    fault_s=time.monotonic() - started)
    if fault == "broker-cut":
        dep.hosts.link("worker1", up=False)
        log("  worker1: link down")
        _during(dep, args.cut, seen)
        dep.hosts.link("worker1", up=True)
        return dict(seen, cut_s=args.cut, fault_s=time.monotonic() - started)
    if fault == "ledger-cut":
        dep.hosts.blackhole("worker1", LEDGER_ADDRESS, on=True)
        log("  worker1: no route to the ledger")
        _during(dep, args.cut, seen)
        dep.hosts.blackhole("worker1", LEDGER_ADDRESS, on=False)
        return dict(seen, cut_s=args.cut, fault_s=time.monotonic() - started)
    if fault == "broker-stop":
        router.block("broker")
        log("  %s unreachable from every host" % dep.broker)
        _during(dep, args.broker_down, seen)
        router.unblock("broker")
        return dict(seen, down_s=args.broker_down, fault_s=time.monotonic() - started)
    if fault == "relay-kill":
        killed = dep.relays["compute1"]
        os.killpg(killed.proc.pid, signal.SIGKILL)
        killed.proc.wait(10)
        killed._fh.close()
        log("  compute1: relay SIGKILLed")
        _during(dep, args.relay_down, seen)
        depth = dep.backlog()["compute1"]
        dep.start_relay("compute1")
        return dict(seen, down_s=args.relay_down, outbox_at_restart=depth,
                    fault_s=time.monotonic() - started)
    if fault == "clock-skew":  # it lasts until the scenario converged (scenario() ends it)
        dep.restart_workers("worker1", skew=-args.skew)
        measured = dep.measured_skew("worker1")
        log("  worker1: pools restarted with the clock %+.0f s off (a process there reads "
            "%+.1f s)" % (-args.skew, measured))
        seen["status_during"] = status_seen(dep)
        return dict(seen, skew_s=-args.skew, measured_skew_s=round(measured, 1),
                    fault_s=time.monotonic() - started)
    raise ValueError(fault)


class HostKiller(threading.Thread):
    """SIGKILLs one worker pool every ``every`` seconds, round robin over the worker hosts'
    pools (worker1's ipam, worker2's ipam, worker1's dns, ...), each restarted at once."""

    def __init__(self, dep: Deployment, every: float) -> None:
        super().__init__(name="host-killer", daemon=True)
        self.dep = dep
        self.every = every
        self.targets = itertools.cycle([(h, q) for q in POOLS for h in WORKERS])
        self.kills: List[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            host, queue = next(self.targets)
            kill_pool(self.dep.workers[host][queue])
            self.dep.start_worker(host, queue)
            self.kills.append("%s/%s" % (host, queue))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


class HostLoad(threading.Thread):
    """CPU seconds used on each host (every process of its namespace, sampled from
    /proc every few seconds, so a process killed between samples counts up to its
    last sample) and by the rest of the machine (the servers, this process, other work)."""

    def __init__(self, hosts: Hosts, every: float = 2.0) -> None:
        super().__init__(name="host-load", daemon=True)
        self.hosts = hosts
        self.every = every
        self.tick = os.sysconf("SC_CLK_TCK")
        self.seen: Dict[str, Dict[int, float]] = {h: {} for h in COMPUTE + WORKERS}
        self._stop_event = threading.Event()
        self._machine_start = self._machine()
        self._began = time.monotonic()
        self.result: Dict[str, Any] = {}

    def _machine(self) -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # not idle/iowait
        return busy / self.tick

    def _sample(self) -> None:
        for host, seen in self.seen.items():
            for pid in self.hosts.pids("nh-" + host):
                try:
                    stat = Path("/proc/%d/stat" % pid).read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                seen[pid] = max(seen.get(pid, 0.0),
                                (int(fields[11]) + int(fields[12])) / self.tick)

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self._sample()

    def stop(self) -> Dict[str, Any]:
        self._stop_event.set()
        self.join(10)
        self._sample()
        wall = time.monotonic() - self._began
        hosts = {h: round(sum(seen.values()), 1) for h, seen in self.seen.items()}
        machine = self._machine() - self._machine_start
        self.result = {"wall_s": round(wall, 1), "cpu_s": dict(
            hosts, rest_of_machine=round(machine - sum(hosts.values()), 1)),
            "machine_cpu_s": round(machine, 1), "cores": os.cpu_count()}
        return self.result


def idle_for(settings: Any) -> float:
    """Seconds since any chain finished a step, by the ledger's clock: a global stall.

    A burst of 1,000 VMs keeps chains waiting in the queues longer than any
    ``stalled_after``, so "no VM done lately" is no stall; reconciling then would
    republish the whole backlog every pass.
    """
    from sqlalchemy import func, select

    from tasks.ledger import ledger, progress
    book = ledger(settings.ledger.url)
    with book.engine.connect() as conn:
        latest = conn.execute(select(func.max(progress.c.updated_at))).scalar()
    return book.now() - float(latest or 0.0)


def scenario(fault: str, index: int, dep: Deployment, args: argparse.Namespace,
             log: Log) -> Dict[str, Any]:
    from novahooks.settings import load_settings
    vms = chaos_vms(args.events, prefix="mh%d" % index, first_octet=60 + 2 * index)
    half = len(vms) // 2
    per_host = {"compute1": vms[:half], "compute2": vms[half:]}
    log("%s: %d VMs, %d per compute host" % (fault, len(vms), half))
    fired = time.monotonic()
    pause = args.pause
    if fault == "relay-kill":  # its hooks keep firing through most of the relay's absence
        pause = max(pause, 0.8 * args.relay_down / max(1, half))
    load = HostLoad(dep.hosts)
    load.start()
    firing = {host: dep.fire(host, part, pause) for host, part in per_host.items()}
    time.sleep(args.fault_after)
    done_before = len(common.finished(dep.stack.audit_path, ("create", "build"),
                                      {vm.uuid for vm in vms}))
    killer: Optional[HostKiller] = None
    if fault == "chaos":
        killer = HostKiller(dep, args.kill_every)
        killer.start()
        log("  killing one worker pool every %.1f s across %s" % (args.kill_every,
                                                                  ", ".join(WORKERS)))
        what: Dict[str, Any] = {"kill_every_s": args.kill_every}
    else:
        what = apply(fault, dep, args, log)
    fault_over = time.monotonic()
    for host, proc in firing.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError("firing on %s failed: %s" % (host, err.decode()[-2000:]))
    settings = load_settings(str(dep.stack.config_path))
    uuids = {vm.uuid for vm in vms}
    last, reconciled, last_reconcile = -1, 0, time.monotonic()
    deadline = time.monotonic() + args.timeout
    while True:
        done = len(common.finished(dep.stack.audit_path, ("create", "build"), uuids))
        now = time.monotonic()
        if done != last:
            last = done
            log("  %d/%d VMs done (%.1f s after the fault)" % (done, len(vms), now - fault_over))
        if killer is not None and killer.is_alive() and (
                done == len(vms) or now > fault_over + args.timeout / 2):
            killer.stop()
            log("  killing stopped after %d kills (%.1f s)" % (len(killer.kills),
                                                                now - fault_over))
        if done == len(vms) or now > deadline:
            break
        if now - last_reconcile > args.stalled_after and \
                idle_for(settings) > args.stalled_after:
            mine = [r for r in common.reconcile(dep.stack.config_path, args.stalled_after)
                    if r["instance_uuid"] in uuids]
            reconciled += len(mine)
            last_reconcile = now
            if mine:
                log("  reconcile: resumed %d stalled chain(s)" % len(mine))
        time.sleep(1.0)
    converged = time.monotonic() - fault_over
    if killer is not None:
        killer.stop()
        what["kills"] = len(killer.kills)
        what["kills_per_host"] = {h: sum(1 for k in killer.kills if k.startswith(h + "/"))
                                  for h in WORKERS}
    if fault == "clock-skew":
        dep.restart_workers("worker1", skew=0.0)
        log("  worker1: pools restarted with the true time")
    time.sleep(1.0)
    report = compare(vms, count_records(dep.stack, vms), live=True)
    result = dict(what, fault=fault, vms=len(vms), done=last, done_when_fault_began=done_before,
                  burst_s=round(fault_over - fired, 1), converge_s=round(converged, 1),
                  reconciled=reconciled, lost=sum(report["lost"].values()),
                  duplicated=sum(report["duplicated"].values()),
                  bad_vms=report["bad_vms"][:5], load=list(os.getloadavg()),
                  broker=dep.broker, host_load=load.stop(),
                  parked=sum(len(poison_parked(dep.workdir / host / "logs")) for host in WORKERS))
    log("%s: %d/%d done %.1f s after the fault ended; lost %d duplicated %d parked %d; "
        "%d reconciled" % (fault, last, len(vms), converged, result["lost"],
                           result["duplicated"], result["parked"], reconciled))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100, help="VMs per fault (default 100)")
    parser.add_argument("--fault", action="append", choices=FAULTS)
    parser.add_argument("--pause", type=float, default=0.02,
                        help="seconds between two VMs' hooks on one compute host")
    parser.add_argument("--fault-after", type=float, default=3.0,
                        help="seconds into the burst the fault begins (default 3)")
    parser.add_argument("--down", type=float, default=20.0)
    parser.add_argument("--cut", type=float, default=60.0)
    parser.add_argument("--broker-down", type=float, default=30.0)
    parser.add_argument("--relay-down", type=float, default=60.0)
    parser.add_argument("--skew", type=float, default=300.0,
                        help="seconds worker1's clock is behind in clock-skew (default 300)")
    parser.add_argument("--kill-every", type=float, default=3.0,
                        help="seconds between two pool kills in chaos (default 3)")
    parser.add_argument("--broker", choices=BROKERS, default="rabbitmq")
    parser.add_argument("--stalled-after", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    faults = args.fault or ["worker-kill"]
    if os.geteuid() != 0:
        print("error: network namespaces need root", file=sys.stderr)
        return 2
    log = lambda line: print(line, flush=True)  # noqa: E731
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-multihost-"))
    dep = Deployment(workdir, log, broker=args.broker)
    results: List[Dict[str, Any]] = []
    code = 2
    load_before = list(os.getloadavg())
    try:
        dep.start()
        os.environ["NOVAHOOKS_CONFIG"] = str(dep.stack.config_path)
        for index, fault in enumerate(faults):
            results.append(scenario(fault, index, dep, args, log))
        code = 1 if any(r["lost"] or r["duplicated"] or r["parked"] or r["done"] != r["vms"]
                        for r in results) else 0
    finally:
        dep.stop()
        if args.keep_workdir or code != 0:
            log("logs kept in %s" % workdir)
        else:
            shutil.rmtree(str(workdir), ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "events_per_fault": args.events, "broker": args.broker, "load_before": load_before,
            "load_after": list(os.getloadavg()), "faults": results}, indent=2) + "\n")
    print("faults=%s lost=%d duplicated=%d" % (
        ",".join(faults), sum(r["lost"] for r in results),
        sum(r["duplicated"] for r in results)), flush=True)
    return code


if __name__ == "__main__":
    threading.current_thread().name = "faults"
    sys.exit(main())
