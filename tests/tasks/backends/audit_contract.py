"""The audit contract as one test class; each audit driver's tests subclass it.

A subclass provides three fixtures: ``audit`` (the driver under test, writing
to a sink of this test's own), ``audit_reader`` (reads what the sink received,
never through the driver) and ``audit_unreachable`` (the driver pointed at a
sink it cannot write to).
"""

import abc
import uuid
from typing import Any, Dict, List

import pytest

from tasks.errors import BackendUnavailable


class AuditReader(abc.ABC):
    """What the audit sink itself received, read without the driver under test."""

    @abc.abstractmethod
    def records(self) -> List[Dict[str, Any]]:
        """Every record the sink received so far, oldest first, as JSON objects."""


def entry(**fields: Any) -> Dict[str, Any]:
    """An entry as the audit step builds it."""
    base = {"time": 1767225600.25, "instance_uuid": str(uuid.uuid4()), "hostname": "vm-1",
            "kind": "build", "event_id": str(uuid.uuid4()), "source": "test", "stage": "done",
            "step": "ipam.register", "error": None, "attempts": 1,
            "addresses": ["10.20.0.5", "2001:db8:20::5"]}
    base.update(fields)
    return base


class AuditContract(object):
    def test_a_record_keeps_every_field_of_the_entry(
            self, audit: Any, audit_reader: AuditReader) -> None:
        sent = entry(policy={"register": True, "rule": "default"})
        assert audit.record(sent) is None
        (received,) = audit_reader.records()
        assert {key: received.get(key) for key in sent} == sent

    def test_records_keep_their_order(self, audit: Any, audit_reader: AuditReader) -> None:
        sent = [entry(stage=stage) for stage in ("start", "done", "failed")]
        for item in sent:
            audit.record(item)
        assert [r["instance_uuid"] for r in audit_reader.records()] == \
            [item["instance_uuid"] for item in sent]

    def test_quotes_brackets_and_other_scripts_come_back_whole(
            self, audit: Any, audit_reader: AuditReader) -> None:
        odd = entry(hostname='we"b]1\\ü-ß', error="line one\nline \"two\" ] [x=\"y\"]",
                    stage="failed", step="dns.register")
        audit.record(odd)
        (received,) = audit_reader.records()
        assert received["hostname"] == odd["hostname"] and received["error"] == odd["error"]

    def test_an_entry_changed_after_recording_stays_as_recorded(
            self, audit: Any, audit_reader: AuditReader) -> None:
        sent = entry()
        audit.record(sent)
        sent["stage"] = "forged"
        assert audit_reader.records()[0]["stage"] == "done"

    def test_check_says_where_records_go(self, audit: Any) -> None:
        assert audit.check()

    def test_a_sink_it_cannot_write_to_is_transient(self, audit_unreachable: Any) -> None:
        with pytest.raises(BackendUnavailable):
            audit_unreachable.record(entry())
