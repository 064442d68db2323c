"""The Celery application shared by the workers and the relay."""

from typing import Any

from celery import Celery, signals

import tasks.signing  # noqa: F401 - signs every task message this process publishes
from novahooks.logs import formatter

# Remote control (ping, inspect, shutdown, pool_shrink...) is signed like task messages.
app = Celery("novahooks", control="tasks.signing:Control")
app.config_from_object("celeryconfig")


@signals.worker_ready.connect
def _metrics(**kwargs: Any) -> None:
    from tasks import metrics
    metrics.serve(**kwargs)


@signals.worker_process_shutdown.connect
def _metrics_child_gone(pid: int, **kwargs: Any) -> None:
    from tasks import metrics
    metrics.child_exit(pid)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _structured(logger: Any, **_: Any) -> None:
    """Workers log JSON lines (key=value on a terminal), like the relay and the CLI."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(getattr(handler, "stream", None)))
