"""A mass boot against ``novahooks vendordata``: N first reads at once, real Samba AD DC.

novajoin's thundering herd (LP #1766824): every guest of a mass boot reads its
metadata within seconds, and Nova asks the vendordata target for each while the
guest waits, giving up after 5 s (``vendordata_dynamic_read_timeout``). One
run, one private DC, one service process (``[vendordata] threads``), bursts
side by side:

* ``first reads``: N new instances at once (policy, shared validation, computer
  object, password or ODJ blob, encrypted store, audit record);
* ``samba-tool computer create``: the pre-stage alone, N at once over LDAP as the
  service account, through a pool of as many processes as the service has threads;
* ``pre-staged, issued ahead``: N instances whose computer object a worker's chain
  made (AD driver + ledger note, as the notification path leaves them, long
  before the guest's first read); the service's own thread gave each its
  credential before the burst (``[vendordata] issue_ahead``; how long that took
  for the N is printed too), so the read only reads it back;
* ``re-reads``: the N instances of the first burst again (ledger and store only);
* ``pre-staged, issued at read``: the same as the third burst against a second
  service with ``issue_ahead = false`` (same DC, its own ledger), so each read
  sets its object's password: what the ahead thread saves.

Every latency is from the burst's start to that answer (a request that waits
for a thread counts its wait, as the guest's does). An answer leaves at
``[vendordata] budget`` at the latest (``over_budget``, retry) while the work goes
on; a VM that got no credential asks again every ``--retry`` seconds (Nova's
cache makes that 15 s in a cloud), and "to credential" is when it got one.
Prints p50/p99/max, how many answers took over 5 s, how many carried the
credential, and the ratios to samba-tool. Run with the project's .venv::

    .venv/bin/python bench/vendordata.py [--vms 100] [--threads 16] [--join password|odj]

Each burst's load average (1 min) before and after it is in the result file.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, latency, log, machine, ratio, save, table  # noqa: E402

NOVA_TIMEOUT = 5.0


def burst(count: int, one: Callable[[int], Any], workers: int) -> Tuple[List[float], float]:
    """Start ``count`` calls at once (``workers`` at a time); each one's seconds from t0."""
    started = time.monotonic()

    def timed(i: int) -> float:
        one(i)
        return time.monotonic() - started
    with ThreadPoolExecutor(workers) as pool:
        samples = list(pool.map(timed, range(count)))
    return samples, time.monotonic() - started


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--join", choices=("password", "odj"), default="password")
    parser.add_argument("--retry", type=float, default=1.0,
                        help="seconds between a VM's reads until it has its credential")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from tests.servers.samba import client_conf, start_samba
    from tests.servers.vendordata import start_vendordata
    from tests.tasks.vendordata.test_vendordata_service import body
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-vendordata-"))
    ok = False
    log("starting a Samba AD DC%s ..." % (" with SMB" if args.join == "odj" else ""))
    samba = start_samba(workdir / "dc", smb=args.join == "odj")
    try:
        extra: Dict[str, Optional[str]] = {"windows_join": args.join, "threads": str(args.threads)}
        if args.join == "odj":
            extra.update(odj_dc=samba.address,
                         odj_smb_conf=str(client_conf(workdir / "net", samba, "BENCH")))
        context = Bench(args, samba, body)
        with start_vendordata(workdir / "vendordata", samba, vendordata=extra) as service:
            context.ahead_bursts(service)
        with start_vendordata(workdir / "vendordata-at-read", samba, vendordata=dict(
                extra, issue_ahead="false")) as service:
            context.at_read_burst(service)
        results = context.results(service)
        ok = True
    finally:
        samba.stop()
        cleanup(workdir, ok)
    path = save("vendordata", results, args.out)
    log("results in %s" % path)
    return 0


def load1() -> float:
    return round(os.getloadavg()[0], 2)


class Bench(object):
    """The bursts, in order (so each one's instances are new or as stated)."""

    def __init__(self, args: Any, samba: Any, body: Callable[..., Dict[str, Any]]) -> None:
        self.args, self.samba, self.body = args, samba, body
        self.tag = uuid.uuid4().hex[:4]
        self.failures: Dict[str, List[str]] = {}
        self.answered: Dict[str, List[float]] = {}
        self.carried: Dict[str, int] = {}
        self.bursts: Dict[str, Any] = {}
        self.ahead: Dict[str, Any] = {}
        self.machine = machine()

    def requests_for(self, prefix: str) -> List[Dict[str, Any]]:
        return [self.body("%s%s%03d" % (prefix, self.tag, i), "windows")
                for i in range(self.args.vms)]

    def reader(self, service: Any, name: str,
               batch: List[Dict[str, Any]]) -> Callable[[int], Any]:
        """The first answer's time goes to ``answered``; the call returns once the VM has
        its credential (re-reading every --retry s), which is what the burst times."""
        import requests

        def read(request: Dict[str, Any]) -> Dict[str, Any]:
            reply = requests.post(service.url, json=request, verify=str(service.ca_file),
                                  auth=(service.username, service.password), timeout=60)
            return dict(reply.json(), status=reply.status_code)

        def one(i: int) -> None:
            started = time.monotonic()
            data = read(batch[i])
            self.answered.setdefault(name, []).append(time.monotonic() - started)
            if "join" in data:
                self.carried[name] = self.carried.get(name, 0) + 1
            while "join" not in data:
                if not data.get("error", {}).get("retry"):
                    self.failures.setdefault(name, []).append(json.dumps(data)[:300])
                    return
                time.sleep(self.args.retry)
                data = read(batch[i])
        return one

    def prestage(self, service: Any, batch: List[Dict[str, Any]]) -> float:
        """What a worker's pre-boot chain leaves for each: the object and the ledger note."""
        from novahooks.settings import load_settings
        from tasks.backends.directory.ad import AdDirectory
        from tasks.ledger import Ledger
        from tasks.vendordata.request import parse
        settings = load_settings(str(service.config_path))
        driver, book = AdDirectory(settings.directory), Ledger(service.ledger_url)
        started = time.monotonic()
        for request in batch:
            event = parse(json.dumps(request).encode(), settings.vendordata)
            book.remember(event.uuid, "directory", driver.register(event))
        return time.monotonic() - started

    def issued(self, service: Any, uuids: List[str]) -> int:
        from sqlalchemy import func, select

        from tasks.ledger import Ledger
        from tasks.vendordata.credentials import credentials
        with Ledger(service.ledger_url).engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(credentials).where(
                credentials.c.instance_uuid.in_(uuids),
                credentials.c.token.is_not(None))).scalar_one())

    def burst(self, name: str, one: Callable[[int], Any], workers: int) -> None:
        n = self.args.vms
        log("burst: %s (%d at once, load %.2f) ..." % (name, n, load1()))
        before = load1()
        samples, wall = burst(n, one, workers)
        first = self.answered.get(name, samples)
        self.bursts[name] = {
            "to_credential": dict(latency(samples), wall_s=wall),
            "answer": latency(first),
            "over_nova_timeout": sum(1 for s in first if s > NOVA_TIMEOUT),
            "over_1s": sum(1 for s in first if s > 1.0),
            "with_credential": self.carried.get(name, n if name.startswith("samba") else 0),
            "failed": len(self.failures.get(name, [])),
            "load1_before": before, "load1_after": load1()}

    def ahead_bursts(self, service: Any) -> None:
        n, samba = self.args.vms, self.samba
        first, prestaged = self.requests_for("f"), self.requests_for("p")
        log("pre-staging %d computer objects the way a worker's chain does ..." % n)
        started = time.monotonic()
        staged = self.prestage(service, prestaged)
        uuids = [r["instance-id"] for r in prestaged]
        while self.issued(service, uuids) < n and time.monotonic() - started < 600:
            time.sleep(0.2)
        self.ahead = {"prestage_s": round(staged, 3),
                      "all_issued_s": round(time.monotonic() - started, 3),
                      "issued": self.issued(service, uuids)}
        log("pre-staged in %.1f s; the service had issued %d credentials ahead %.1f s "
            "after the first object" % (staged, self.ahead["issued"],
                                        self.ahead["all_issued_s"]))

        def samba_tool(i: int) -> None:
            result = subprocess.run(
                ["samba-tool", "computer", "create", "S%s%03d" % (self.tag, i),
                 "--computerou=OU=NovaVMs", "-H", samba.ldaps_url.replace("ldaps", "ldap"),
                 "-U", "%s\\novahooks%%%s" % (samba.domain, samba.bind_password),
                 "--use-kerberos=off", "-s", str(samba.smb_conf)],
                capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                self.failures.setdefault("samba-tool", []).append(result.stderr[-300:])

        self.burst("first reads", self.reader(service, "first reads", first), n)
        self.burst("samba-tool computer create", samba_tool, self.args.threads)
        self.burst("pre-staged, issued ahead",
                   self.reader(service, "pre-staged, issued ahead", prestaged), n)
        self.burst("re-reads", self.reader(service, "re-reads", first), n)

    def at_read_burst(self, service: Any) -> None:
        batch = self.requests_for("r")
        log("pre-staging %d more for a service with issue_ahead = false ..." % len(batch))
        self.prestage(service, batch)
        name = "pre-staged, issued at read"
        self.burst(name, self.reader(service, name, batch), self.args.vms)

    def results(self, service: Any) -> Dict[str, Any]:
        bursts = self.bursts
        base = bursts["samba-tool computer create"]["to_credential"]
        rows = [(name, b["answer"]["p50_ms"], b["answer"]["p99_ms"], b["over_nova_timeout"],
                 b["over_1s"], b["with_credential"], b["to_credential"]["p50_ms"],
                 b["to_credential"]["p99_ms"], b["to_credential"]["wall_s"], b["failed"],
                 ratio(b["to_credential"]["p99_ms"], base["p99_ms"]),
                 "%.1f-%.1f" % (b["load1_before"], b["load1_after"]))
                for name, b in bursts.items()]
        log(table(["burst", "answer p50 ms", "answer p99 ms", "> 5 s", "> 1 s",
                   "with credential", "to credential p50 ms", "p99 ms", "wall s", "failed",
                   "p99 / samba-tool", "load"], rows))
        for name, items in self.failures.items():
            log("%s failures (first): %s" % (name, items[0]))
        log("vendordata_first_p99_ratio=%.3f" % ratio(
            bursts["first reads"]["to_credential"]["p99_ms"], base["p99_ms"]))
        return {"vms": self.args.vms, "threads": self.args.threads, "join": self.args.join,
                "retry_s": self.args.retry, "budget_s": service_budget(service),
                "ahead": self.ahead, "bursts": bursts, "machine": self.machine,
                "load1_end": load1(),
                "failures": {k: v[:3] for k, v in self.failures.items()}}


def service_budget(service: Any) -> float:
    from novahooks.settings import load_settings
    return load_settings(str(service.config_path)).vendordata.budget


if __name__ == "__main__":
    sys.exit(main())
