"""The audit contract on the JSONL file and on RFC 5424 syslog, with a real file and a
real UDP socket, read back without the drivers."""

import json
import socket
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from novahooks.settings import AuditSettings
from tasks.backends.audit.jsonl import JsonlAudit
from tasks.backends.audit.syslog import SyslogAudit
from tests.tasks.backends.audit_contract import AuditContract, AuditReader


class FileReader(AuditReader):
    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> List[Dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]


class TestJsonlAudit(AuditContract):
    @pytest.fixture
    def audit(self, tmp_path: Path) -> JsonlAudit:
        return JsonlAudit(AuditSettings({"path": str(tmp_path / "audit.jsonl")}))

    @pytest.fixture
    def audit_reader(self, tmp_path: Path) -> FileReader:
        return FileReader(tmp_path / "audit.jsonl")

    @pytest.fixture
    def audit_unreachable(self, tmp_path: Path) -> JsonlAudit:
        (tmp_path / "a-file").write_text("")
        return JsonlAudit(AuditSettings({"path": str(tmp_path / "a-file" / "audit.jsonl")}))


class Collector(AuditReader):
    """A syslog collector: a UDP socket keeping every message's JSON part."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received: List[Dict[str, Any]] = []

    def records(self) -> List[Dict[str, Any]]:
        """Everything that arrived: waits a second for a first message, then takes what
        has queued behind it."""
        self.sock.settimeout(1.0)
        try:
            while True:
                data = self.sock.recv(65535)
                self.received.append(json.loads(data.partition(b"\xef\xbb\xbf")[2]))
                self.sock.settimeout(0.05)
        except socket.timeout:
            return list(self.received)

    def close(self) -> None:
        self.sock.close()


class TestSyslogAudit(AuditContract):
    @pytest.fixture
    def collector(self) -> Iterator[Collector]:
        collector = Collector()
        try:
            yield collector
        finally:
            collector.close()

    @pytest.fixture
    def audit(self, collector: Collector) -> SyslogAudit:
        return SyslogAudit(AuditSettings({"drivers": ["syslog"], "syslog_host": "127.0.0.1",
                                          "syslog_port": collector.port}))

    @pytest.fixture
    def audit_reader(self, collector: Collector) -> Collector:
        return collector

    @pytest.fixture
    def audit_unreachable(self) -> SyslogAudit:
        """The limited broadcast address: the kernel refuses the datagram (no
        SO_BROADCAST), as it refuses one to a network it has no route to."""
        return SyslogAudit(AuditSettings({"syslog_host": "255.255.255.255",
                                          "syslog_port": 514}))
