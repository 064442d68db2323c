"""What every step shares that Celery would otherwise decide: a retry the broker cannot
take (it is down) puts the message back instead of failing the event. The broker here
is a real closed port on loopback, so the publish really fails as it does in an outage."""

from typing import Any

import pytest
from celery import Celery, Task
from celery.exceptions import Reject

from tasks.base import StepTask
from tasks.errors import TransientError
from tests.servers.base import free_port


def _unreachable_broker_app() -> Celery:
    app = Celery("retry-probe", broker="redis://127.0.0.1:%d/0" % free_port(),
                 set_as_current=False)
    app.conf.update(broker_connection_retry=False, task_publish_retry=False,
                    broker_connection_timeout=1)
    return app


def _retry_of(base: type) -> Reject:
    app = _unreachable_broker_app()

    @app.task(base=base, bind=True, name="dns.retry_probe_%s" % base.__name__)
    def probe(self: Any) -> None:
        """Never run: only its retry is exercised."""

    probe.push_request(id="task-1", retries=0, called_directly=False, delivery_info={})
    try:
        with pytest.raises(Reject) as raised:
            probe.retry(exc=TransientError("DNS server briefly away"), countdown=0)
    finally:
        probe.pop_request()
    return raised.value


def test_celery_alone_drops_a_message_whose_retry_the_broker_cannot_take() -> None:
    assert _retry_of(Task).requeue is False


def test_a_step_whose_retry_the_broker_cannot_take_goes_back_to_the_broker() -> None:
    rejected = _retry_of(StepTask)
    assert rejected.requeue is True
    assert "refused" in str(rejected.reason).lower() or "connect" in str(rejected.reason).lower()


def test_a_step_whose_next_message_the_broker_refused_is_no_dead_letter(stack: Any) -> None:
    """The step did its work; only the chain's next message found the broker down (Celery
    then calls on_failure): the chain stays open for reconcile, not parked for an operator."""
    from kombu.exceptions import OperationalError

    from tasks.ledger import book
    from tests.conftest import make_event
    app = _unreachable_broker_app()
    with pytest.raises(OperationalError) as refused:
        app.send_task("ldap.register", args=({},), queue="ldap")

    @app.task(base=StepTask, bind=True, name="ldap.next_probe")
    def probe(self: Any) -> None:
        """Never run: only its failure handler is exercised."""

    event = make_event().to_dict()
    probe.push_request(id="task-2", retries=0, called_directly=False, delivery_info={})
    try:
        probe.on_failure(refused.value, "task-2", (event,), {}, None)
        assert event["event_id"] not in {row["event_id"] for row in book().dead_letters()}
        # anything else is still a failure of the event (its audit record then finds the
        # same closed port)
        with pytest.raises(OperationalError):
            probe.on_failure(ValueError("a bug"), "task-2", (event,), {}, None)
        assert event["event_id"] in {row["event_id"] for row in book().dead_letters()}
    finally:
        probe.pop_request()
