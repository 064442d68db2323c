"""An audit trail in memory: records appended in order, each a copy no caller can change.

The rules are the JSONL and syslog drivers': an entry must be JSON-safe (it is
stored as its JSON round trip, so a caller changing its dict afterwards
changes nothing), records are only ever appended, and each gets the next
sequence number.
"""

import json
from typing import Any, Dict, List

from tasks.backends.audit.base import AuditDriver
from tasks.backends.memory import Backend, MemoryDriver
from tasks.errors import PermanentError


class AuditStore(Backend):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.records: List[Dict[str, Any]] = []


class MemoryAudit(AuditDriver, MemoryDriver):
    BACKEND = AuditStore
    KIND = "audit"
    LOCATION = "path"

    def record(self, entry: Dict[str, Any]) -> None:
        try:
            text = json.dumps(entry, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise PermanentError("audit entry is not JSON-safe: %s" % exc,
                                 backend=self.KIND) from exc
        with self.session() as store:
            store.records.append(dict(json.loads(text), seq=len(store.records) + 1))
