"""Each piece around a step on its own: outcome line, delivery counting and poison
parking (a probe really forks, and a probe that really kills its process is parked),
skips, progress. A stand-in task carries what Celery would hand a step (its
name and request); the ledger is a real SQLite file; the step body writes through the
in-memory DNS driver, so what a piece lets through or stops is seen in a backend."""

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest
from celery.exceptions import Reject, Retry
from sqlalchemy import select

from novahooks.event import Address
from tasks import policy
from tasks.backends.dns.memory import DnsStore, MemoryDns
from tasks.backends.memory import backend, forget_all
from tasks.ledger import Ledger, deliveries, progress
from tasks.middleware import (PROBE_HEADER, STACK, Deliveries, Outcome, Progress, Run, Skips,
                              StepSkipped, run_through)
from tests.conftest import make_event, unique_v4


class StandInTask(object):
    """What the pieces read of a Celery task: name, backend kind, request, retry,
    on_failure (recorded, as Celery would call it)."""

    backend_kind = "dns"

    max_retries = 5

    def __init__(self, name: str = "dns.register", redelivered: bool = False,
                 chain: Optional[List[Any]] = None, probe: Optional[int] = None) -> None:
        self.name = name
        self.request = SimpleNamespace(id="task-1", retries=0, chain=chain,
                                       delivery_info={"redelivered": redelivered},
                                       headers={PROBE_HEADER: probe} if probe else None)
        self.failures: List[str] = []
        #: the options of each retry() call (Celery would publish the message again)
        self.retried: List[Dict[str, Any]] = []

    def retry(self, exc: Optional[Exception] = None, **options: Any) -> Retry:
        self.retried.append(options)
        return Retry(exc=exc)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        self.failures.append(str(exc))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("sqlite:///%s" % (tmp_path / "ledger.sqlite"))


@pytest.fixture
def dns() -> MemoryDns:
    forget_all()
    backend(DnsStore).zones = {"cloud.example.test", "10.in-addr.arpa"}
    return MemoryDns(SimpleNamespace(driver="memory", url="memory://", zone="cloud.example.test",
                                     reverse_zones=["10.in-addr.arpa"], tsig_secret=None,
                                     ttl=300))


def _event() -> Dict[str, Any]:
    return make_event(addresses=[Address(unique_v4(), 4)]).to_dict()


def _register(dns: MemoryDns, event: Dict[str, Any]) -> Any:
    def body() -> Any:
        fqdn = "%s.cloud.example.test" % event["hostname"]
        return dns.register(fqdn, event["uuid"], [Address(**a) for a in event["addresses"]])
    return body


def _held(event: Dict[str, Any]) -> Dict[str, Any]:
    return backend(DnsStore).names.get("%s.cloud.example.test" % event["hostname"], {})


def test_outcome_logs_one_line_per_run_naming_the_outcome_and_the_error(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="novahooks.step")
    event = _event()
    ok = Run(StandInTask(), [event], {})
    assert Outcome().around(ok, lambda: {"done": True}) == {"done": True}
    failed = Run(StandInTask(), [event], {})
    with pytest.raises(ValueError):
        Outcome().around(failed, lambda: (_ for _ in ()).throw(ValueError("bad zone")))
    lines = [r for r in caplog.records if r.name == "novahooks.step"]
    assert [r.getMessage() for r in lines] == ["dns.register ok", "dns.register failed"]
    fields = [r.novahooks_fields for r in lines]  # type: ignore[attr-defined]
    assert fields[0]["outcome"] == "ok" and fields[0]["instance_uuid"] == event["uuid"]
    assert fields[1]["error"] == "ValueError: bad zone"
    assert lines[1].levelno == logging.WARNING


def test_a_first_delivery_writes_nothing_and_a_redelivery_is_counted_then_settled(
        ledger: Ledger, dns: MemoryDns) -> None:
    event = _event()
    first = Run(StandInTask(), [event], {}, ledger=ledger)
    Deliveries(max_deliveries=3).around(first, _register(dns, event))
    with ledger.engine.connect() as conn:
        assert conn.execute(select(deliveries)).all() == []
    seen: List[int] = []

    def body() -> Any:
        with ledger.engine.connect() as conn:
            seen.extend(row.count for row in conn.execute(select(deliveries)))
        return _register(dns, event)()
    again = Run(StandInTask(redelivered=True), [event], {}, ledger=ledger)
    Deliveries(max_deliveries=3).around(again, body)
    assert seen == [1], "the redelivery was counted while the step ran"
    with ledger.engine.connect() as conn:
        assert conn.execute(select(deliveries)).all() == [], "and settled once it finished"
    assert _held(event)["A"] == {event["addresses"][0]["address"]}


def test_a_message_whose_worker_keeps_dying_is_delivered_again_alone_not_parked(
        ledger: Ledger, dns: MemoryDns) -> None:
    """Its worker died with it three times: that alone proves nothing (a whole worker
    killed takes innocent messages with it), so it goes out again as a probe, after the
    cool-down, and nothing is parked."""
    event = _event()
    task = StandInTask(redelivered=True)
    ledger.delivered("task-1:0")
    ledger.delivered("task-1:0")  # two deaths counted; this delivery is the third
    run = Run(task, [event], {}, ledger=ledger)
    with pytest.raises(Retry):
        Deliveries(max_deliveries=3, cooldown=7).around(run, _register(dns, event))
    assert task.failures == [], "not parked"
    (options,) = task.retried
    assert options["countdown"] == 7 and options["headers"] == {PROBE_HEADER: 3}
    assert options["max_retries"] >= task.max_retries, "a probe uses up no retry"
    assert _held(event) == {}, "the step itself did not run in this delivery"
    with ledger.engine.connect() as conn:
        assert conn.execute(select(deliveries)).all() == [], "a probe's count starts over"


def test_a_probe_that_kills_the_process_running_it_is_parked(
        ledger: Ledger, dns: MemoryDns) -> None:
    """The step really ends its process (os._exit, as a crash in a C library would):
    the watching process survives it, so the message is the cause, and it is parked."""
    event = _event()
    task = StandInTask(probe=3)
    run = Run(task, [event], {}, ledger=ledger)

    def fatal() -> Any:
        os._exit(3)
    with pytest.raises(Reject, match=r"killed the process that ran it alone \(exit code 3\)"):
        Deliveries(max_deliveries=3).around(run, fatal)
    assert run.outcome == "parked"
    assert task.failures and task.failures[0].startswith("PoisonMessage")
    assert "died 3 times" in task.failures[0]
    assert _held(event) == {}


def test_a_probe_that_finishes_hands_back_its_result_and_its_outcome(
        ledger: Ledger, dns: MemoryDns) -> None:
    """The step ran in the forked process: what it wrote is in the (shared) ledger, its
    result and the outcome the inner pieces named come back to the watching process."""
    event = _event()
    parent = os.getpid()

    def body() -> Any:
        ledger.remember(event["uuid"], "dns", {"pid": os.getpid()})
        return {"ran_in": os.getpid()}
    run = Run(StandInTask(probe=3), [event], {}, ledger=ledger)
    result = Deliveries(max_deliveries=3).around(run, body)
    assert result["ran_in"] != parent and run.outcome == "ok"
    assert ledger.made(event["uuid"])["dns"] == {"pid": result["ran_in"]}

    def superseded() -> Any:
        raise StepSkipped("superseded by ev-2")
    skipped = Run(StandInTask(probe=3), [event], {}, ledger=ledger)
    assert run_through((Deliveries(max_deliveries=3), Skips()), skipped, superseded) == \
        {"skipped": "superseded by ev-2"}
    assert (skipped.outcome, skipped.skipped) == ("skipped", "superseded by ev-2")
    failing = Run(StandInTask(probe=3), [event], {}, ledger=ledger)
    with pytest.raises(ValueError, match="bad zone"):
        Deliveries(max_deliveries=3).around(
            failing, lambda: (_ for _ in ()).throw(ValueError("bad zone")))


def test_skips_end_skipped_with_the_reason_and_touch_no_backend(dns: MemoryDns) -> None:
    event = _event()
    run = Run(StandInTask(), [event], {})

    def superseded() -> Any:
        raise StepSkipped("superseded by ev-2")
    assert Skips().around(run, superseded) == {"skipped": "superseded by ev-2"}
    assert (run.outcome, run.skipped) == ("skipped", "superseded by ev-2")
    left_out = Run(StandInTask(), [event], {})
    decision = policy.Decision(register=False, hostname=None, fqdn=None, rule="[register] opt-in")

    def not_registered() -> Any:
        raise policy.Skipped(decision)
    result = Skips().around(left_out, not_registered)
    assert result["rule"] == "[register] opt-in" and left_out.skipped_by == "[register] opt-in"
    assert _held(event) == {}


def test_progress_notes_a_finished_step_and_a_closing_audit_finishes_the_event(
        ledger: Ledger, dns: MemoryDns) -> None:
    event = _event()
    Progress().around(Run(StandInTask(), [event], {}, ledger=ledger), _register(dns, event))
    Progress().around(Run(StandInTask("audit.record"), [event], {"stage": "done"},
                          ledger=ledger), lambda: None)
    Progress().around(Run(StandInTask("audit.record"), [event], {"stage": "failed"},
                          ledger=ledger), lambda: None)
    with ledger.engine.connect() as conn:
        (row,) = conn.execute(select(progress).where(
            progress.c.event_id == event["event_id"])).all()
    assert row.done_steps.split(",") == ["dns.register", "audit.record"]
    assert row.finished_at is not None


def test_a_step_that_raises_is_not_noted_as_done(ledger: Ledger) -> None:
    event = _event()
    with pytest.raises(RuntimeError):
        Progress().around(Run(StandInTask(), [event], {}, ledger=ledger),
                          lambda: (_ for _ in ()).throw(RuntimeError("refused")))
    with ledger.engine.connect() as conn:
        assert conn.execute(select(progress)).all() == []


def test_the_stack_runs_every_piece_around_the_step_in_order(
        ledger: Ledger, dns: MemoryDns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="novahooks.step")
    event = _event()
    stack = (STACK[0], Deliveries(max_deliveries=3), STACK[2], STACK[3])
    run = Run(StandInTask(redelivered=True), [event], {}, ledger=ledger)
    result = run_through(stack, run, _register(dns, event))
    assert result and _held(event)["owner"] == event["uuid"]
    with ledger.engine.connect() as conn:
        assert conn.execute(select(deliveries)).all() == []
        assert conn.execute(select(progress.c.done_steps)).scalar() == "dns.register"
    (line,) = [r for r in caplog.records if r.name == "novahooks.step"]
    assert line.novahooks_fields["outcome"] == "ok"  # type: ignore[attr-defined]
