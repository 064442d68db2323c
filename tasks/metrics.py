"""Prometheus metrics of the worker side: per step, outcomes and latency.

Celery's prefork pool runs tasks in child processes, so counters live in
prometheus-client's multiprocess files (one directory per worker pool, made
before the children fork) and the pool's main process serves them all on
``[metrics] worker_port``.
"""

import os
import shutil
from typing import Any

from tasks.config import settings

_port = settings().metrics.worker_port
if _port:
    # Set here, in the pool's main process before it forks, never inherited from a parent.
    _dir = os.path.join(settings().metrics.multiproc_dir, "worker-%d" % os.getpid())
    shutil.rmtree(_dir, ignore_errors=True)
    os.makedirs(_dir, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir

from prometheus_client import (CollectorRegistry, Counter, Histogram,  # noqa: E402
                               multiprocess, start_http_server, values)

# prometheus-client picks its value store when first imported, and the celery command
# imports it before this module (through Flower's CLI plugin): pick again, now that the
# directory is set, so these metrics live in files the main process can serve.
values.ValueClass = values.get_value_class()

STEPS = Counter("novahooks_step_total", "Step executions by outcome",
                ["step", "outcome"])
LATENCY = Histogram("novahooks_step_duration_seconds", "Time a step spent, backend call included",
                    ["step"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                       30))

BACKEND = Histogram("novahooks_step_backend_seconds",
                    "Time a step spent in its backend calls (the rest is Celery, ledger and "
                    "validation)", ["step"],
                    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

REFUSED = Counter("novahooks_messages_refused_total",
                  "Broker messages a worker refused without acting on them (unsigned, forged, "
                  "oversized, undecodable, unknown task)", ["queue", "reason"])


PREVIOUS_KEY = Counter("novahooks_messages_previous_key_total",
                       "Task messages accepted under [broker] previous_signing_key (a key "
                       "rotation still under way)", ["queue"])


def refused(queue: str, reason: str) -> None:
    REFUSED.labels(queue, reason).inc()


def previous_key(queue: str) -> None:
    PREVIOUS_KEY.labels(queue).inc()


def observe(step: str, outcome: str, seconds: float, backend_seconds: float = 0.0) -> None:
    STEPS.labels(step, outcome).inc()
    LATENCY.labels(step).observe(seconds)
    if outcome == "ok":
        BACKEND.labels(step).observe(backend_seconds)


def serve(**_: Any) -> None:
    """Serve every pool process's metrics from the worker's main process."""
    if not _port:
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(_port, addr=settings().metrics.address, registry=registry)


def child_exit(pid: int, **_: Any) -> None:
    if _port:
        multiprocess.mark_process_dead(pid)
