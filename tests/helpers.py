"""Small helpers the integration tests share: waiting for a condition, reading the audit."""

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List


def until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
          interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s not reached in %.0f s (last: %r)" % (what, timeout, last))


def audit_lines(path: Path, instance_uuid: str) -> List[Dict[str, Any]]:
    """The audit records of one instance, in order."""
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r.get("instance_uuid") == instance_uuid]
