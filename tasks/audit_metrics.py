"""How the audit log's proofs stand: for ``novahooks check`` and the signer's Prometheus port.

A log is only as good as its last checkpoint held outside it: what matters is
how old that checkpoint is, how old the last one an anchor took is, how many
records are not covered yet, and whether a verification ever failed (the
signer counts those: its periodic re-read, a witness refusal, a resume on a
log that no longer matches).
"""

import functools
import json
import os
import time
from typing import Any, Dict, List, Optional

from novahooks.settings import AuditSettings
from tasks.backends.audit import checkpoint, note
from tasks.backends.audit.log import Log
from tasks.errors import BackendUnavailable, Misconfigured


def _age(stamp: Optional[float], now: float) -> Optional[float]:
    return None if stamp is None else round(max(0.0, now - stamp), 1)


def health(config: AuditSettings, now: Optional[float] = None) -> Dict[str, Any]:
    """The latest checkpoint checked against the key and the log, with ages and problems."""
    from tasks.audit_signer import status_path
    now = time.time() if now is None else now
    problems: List[str] = []
    if not config.verifier_key:
        raise Misconfigured("[audit] verifier_key is not set")
    key = note.Verifier(config.verifier_key)
    path = config.latest_checkpoint()
    report: Dict[str, Any] = {"checkpoint": path, "problems": problems, "anchors": {}}
    signed = None
    if not os.path.exists(path):
        problems.append("no checkpoint at %s yet (is `novahooks audit signer` running?)" % path)
    else:
        try:
            signed = checkpoint.read(path, key, origin=key.name)
        except note.NoteError as exc:
            problems.append(str(exc))
    # Read after the checkpoint: the status the signer wrote is then as new or newer.
    try:
        with open(status_path(config), encoding="utf-8") as handle:
            status = json.load(handle)
    except (OSError, ValueError):
        status = {}
    report["verify_failures"] = int(status.get("verify_failures", 0))
    if status.get("refused"):
        problems.append("the signer stopped signing: %s" % status["refused"])
    if signed is None:
        return report
    cp = signed.checkpoint
    written = (status.get("checkpoint") or {}).get("time") or os.path.getmtime(path)
    log = Log(config.path)
    records = log.catch_up()
    report.update(size=cp.size, records=records, pending=max(0, records - cp.size),
                  checkpoint_age_s=_age(written, now))
    if records < cp.size:
        problems.append("truncated: the log holds %d records, the checkpoint %d"
                        % (records, cp.size))
    elif log.tree.root(cp.size) != cp.root:
        problems.append("the log's first %d records do not hash to the checkpoint's root"
                        % cp.size)
    late = 2 * config.checkpoint_interval + 30
    if report["pending"] and report["checkpoint_age_s"] > late:
        problems.append("%d record(s) wait for a checkpoint for %ss (over %ss: is the signer "
                        "running?)" % (report["pending"], report["checkpoint_age_s"], late))
    anchors: Dict[str, Any] = {}
    for name in config.anchors():
        held = (status.get("anchors") or {}).get(name) or {}
        anchors[name] = {"size": held.get("size"), "age_s": _age(held.get("time"), now),
                         "error": held.get("error")}
        if held.get("error"):
            problems.append("anchor %s: %s" % (name, held["error"]))
    report["anchors"] = anchors
    ages = [a["age_s"] for a in anchors.values() if a["age_s"] is not None]
    report["anchored_age_s"] = min(ages) if ages else None
    if config.strict and not any((a["size"] or 0) >= cp.size for a in anchors.values()):
        problems.append("strict: no anchor holds the latest checkpoint (size %d)" % cp.size)
    return report


def check(config: AuditSettings) -> str:
    """One line for ``novahooks check``; raises with every problem found."""
    report = health(config)
    if report["problems"]:
        raise BackendUnavailable("; ".join(report["problems"]), backend="audit checkpoint")
    anchored = ", ".join("%s %ss ago" % (name, a["age_s"]) for name, a in
                         report["anchors"].items()) or "no anchor configured"
    return ("checkpoint of %d records, %ss old, %d record(s) after it; anchored: %s; "
            "verify failures: %d" % (report["size"], report["checkpoint_age_s"],
                                     report["pending"], anchored, report["verify_failures"]))


def serve(config: AuditSettings, signer: Any, address: str = "127.0.0.1") -> None:
    """The signer's own gauges, read from its state on each scrape."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server
    registry = CollectorRegistry()

    def checkpoint_age() -> float:
        return time.time() - signer.last_time if signer.last else float("nan")

    def anchor_age(name: str) -> float:
        stamp = signer.anchored.get(name, {}).get("time")
        return time.time() - stamp if stamp else float("nan")

    Gauge("novahooks_audit_records", "Records in the audit log", registry=registry
          ).set_function(lambda: signer.log.tree.size)
    Gauge("novahooks_audit_checkpoint_size", "Records the latest checkpoint covers",
          registry=registry).set_function(lambda: signer.last.size if signer.last else 0)
    Gauge("novahooks_audit_checkpoint_age_seconds", "Age of the latest signed checkpoint",
          registry=registry).set_function(checkpoint_age)
    anchored = Gauge("novahooks_audit_anchor_age_seconds",
                     "Age of the latest checkpoint each anchor took", ["anchor"],
                     registry=registry)
    for anchor in signer.anchors:
        anchored.labels(anchor.name).set_function(functools.partial(anchor_age, anchor.name))
    Gauge("novahooks_audit_verify_failures", "Verifications of the log that failed",
          registry=registry).set_function(lambda: signer.verify_failures)
    Gauge("novahooks_audit_refused", "1 while the signer refuses to sign a changed log",
          registry=registry).set_function(lambda: 1 if signer.refused else 0)
    start_http_server(config.metrics_port, addr=address, registry=registry)
