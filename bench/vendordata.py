"""A mass boot against ``novahooks vendordata``: N first reads at once, real Samba AD DC.

novajoin's thundering herd (LP #1766824): every guest of a mass boot reads its
metadata within seconds, and Nova asks the vendordata target for each while the
guest waits, giving up after 5 s (``vendordata_dynamic_read_timeout``). One
run, one private DC, one service process (``[vendordata] threads``), bursts
side by side:

* ``first reads``: N new instances at once (policy, computer object, password or
  ODJ blob, encrypted store, audit record);
* ``pre-staged``: N instances whose computer object a worker's chain made
  already (AD driver + ledger record, as the notification path leaves them), so
  the read only issues the credential;
* ``re-reads``: the N instances of the first burst again (ledger and store only);
* ``samba-tool computer create``: the pre-stage alone, N at once over LDAP as the
  service account, through a pool of as many processes as the service has threads.

Every latency is from the burst's start to that answer (a request that waits
for a thread counts its wait, as the guest's does). An answer leaves at
``[vendordata] budget`` at the latest (``over_budget``, retry) while the work goes
on; a VM that got no credential asks again every ``--retry`` seconds (Nova's
cache makes that 15 s in a cloud), and "to credential" is when it got one.
Prints p50/p99/max, how many answers took over 5 s, how many carried the
credential, and the ratios to samba-tool. Run with the project's .venv::

    .venv/bin/python bench/vendordata.py [--vms 100] [--threads 16] [--join password|odj]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, latency, log, ratio, save, table  # noqa: E402

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
        extra: Dict[str, str] = {"windows_join": args.join, "threads": str(args.threads)}
        if args.join == "odj":
            extra.update(odj_dc=samba.address,
                         odj_smb_conf=str(client_conf(workdir / "net", samba, "BENCH")))
        service = start_vendordata(workdir / "vendordata", samba, vendordata=extra)
        try:
            results = run(args, samba, service, body)
            ok = True
        finally:
            service.stop()
    finally:
        samba.stop()
        cleanup(workdir, ok)
    path = save("vendordata", results, args.out)
    log("results in %s" % path)
    return 0


def run(args: Any, samba: Any, service: Any, body: Callable[..., Dict[str, Any]]
        ) -> Dict[str, Any]:
    """The four bursts, in this order (so each one's instances are new or as stated)."""
    import requests
    from novahooks.settings import load_settings
    from tasks.backends.directory.ad import AdDirectory
    from tasks.ledger import Ledger
    from tasks.vendordata.request import parse
    settings = load_settings(str(service.config_path))
    tag = uuid.uuid4().hex[:4]
    n = args.vms

    def requests_for(prefix: str) -> List[Dict[str, Any]]:
        return [body("%s%s%03d" % (prefix, tag, i), "windows") for i in range(n)]

    failures: Dict[str, List[str]] = {}
    answered: Dict[str, List[float]] = {}
    carried: Dict[str, int] = {}

    def read(request: Dict[str, Any]) -> Dict[str, Any]:
        reply = requests.post(service.url, json=request, verify=str(service.ca_file),
                              auth=(service.username, service.password), timeout=60)
        return dict(reply.json(), status=reply.status_code)

    def reader(name: str, batch: List[Dict[str, Any]]) -> Callable[[int], Any]:
        """The first answer's time goes to ``answered``; the call returns once the VM has
        its credential (re-reading every --retry s), which is what the burst times."""
        def one(i: int) -> None:
            started = time.monotonic()
            data = read(batch[i])
            answered.setdefault(name, []).append(time.monotonic() - started)
            if "join" in data:
                carried[name] = carried.get(name, 0) + 1
            while "join" not in data:
                if not data.get("error", {}).get("retry"):
                    failures.setdefault(name, []).append(json.dumps(data)[:300])
                    return
                time.sleep(args.retry)
                data = read(batch[i])
        return one

    first, prestaged = requests_for("f"), requests_for("p")
    log("pre-staging %d computer objects the way a worker's chain does ..." % n)
    driver, book = AdDirectory(settings.directory), Ledger(service.ledger_url)
    for request in prestaged:
        event = parse(json.dumps(request).encode(), settings.vendordata)
        book.remember(event.uuid, "directory", driver.register(event))

    def samba_tool(i: int) -> None:
        result = subprocess.run(
            ["samba-tool", "computer", "create", "S%s%03d" % (tag, i),
             "--computerou=OU=NovaVMs", "-H", samba.ldaps_url.replace("ldaps", "ldap"),
             "-U", "%s\\novahooks%%%s" % (samba.domain, samba.bind_password),
             "--use-kerberos=off", "-s", str(samba.smb_conf)],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            failures.setdefault("samba-tool", []).append(result.stderr[-300:])

    bursts: Dict[str, Any] = {}
    for name, one, workers in (
            ("first reads", reader("first reads", first), n),
            ("samba-tool computer create", samba_tool, args.threads),
            ("pre-staged", reader("pre-staged", prestaged), n),
            ("re-reads", reader("re-reads", first), n)):
        log("burst: %s (%d at once) ..." % (name, n))
        samples, wall = burst(n, one, workers)
        first = answered.get(name, samples)
        bursts[name] = {"to_credential": dict(latency(samples), wall_s=wall),
                        "answer": latency(first),
                        "over_nova_timeout": sum(1 for s in first if s > NOVA_TIMEOUT),
                        "with_credential": carried.get(name, n if name.startswith(
                            "samba") else 0),
                        "failed": len(failures.get(name, []))}
    base = bursts["samba-tool computer create"]["to_credential"]
    rows = [(name, b["answer"]["p50_ms"], b["answer"]["p99_ms"], b["over_nova_timeout"],
             b["with_credential"], b["to_credential"]["p50_ms"], b["to_credential"]["p99_ms"],
             b["to_credential"]["wall_s"], b["failed"],
             ratio(b["to_credential"]["p99_ms"], base["p99_ms"]))
            for name, b in bursts.items()]
    log(table(["burst", "answer p50 ms", "answer p99 ms", "> 5 s", "with credential",
               "to credential p50 ms", "p99 ms", "wall s", "failed", "p99 / samba-tool"],
              rows))
    for name, items in failures.items():
        log("%s failures (first): %s" % (name, items[0]))
    log("vendordata_first_p99_ratio=%.3f" % ratio(
        bursts["first reads"]["to_credential"]["p99_ms"], base["p99_ms"]))
    return {"vms": n, "threads": args.threads, "join": args.join, "retry_s": args.retry,
            "budget_s": service_budget(service), "bursts": bursts,
            "failures": {k: v[:3] for k, v in failures.items()}}


def service_budget(service: Any) -> float:
    from novahooks.settings import load_settings
    return load_settings(str(service.config_path)).vendordata.budget


if __name__ == "__main__":
    sys.exit(main())
