"""Operator actions on the worker side: dead letters and stalled chains.

Kept apart from the CLI's argument parsing so that tests and other front ends
call the same code the command runs.
"""

import json
import time
from typing import Any, Dict, List, Optional

from novahooks.settings import Settings


def _ledger(settings: Settings) -> Any:
    from tasks.ledger import ledger
    return ledger(settings.ledger.url)


def dead_letters(settings: Settings, include_replayed: bool = False) -> List[Dict[str, Any]]:
    return _ledger(settings).dead_letters(include_replayed)


def replay(settings: Settings, letter_id: Optional[int] = None) -> List[int]:
    """Publish the failed step and the rest of its chain again; returns the letters replayed."""
    from tasks import chains
    from tasks.app import app
    ledger = _ledger(settings)
    letters = [ledger.dead_letter_by_id(letter_id)] if letter_id is not None \
        else ledger.dead_letters()
    replayed = []
    for letter in letters:
        if letter is None or letter["replayed_at"]:
            continue
        event = json.loads(letter["event"])
        if event.get("kind") not in chains.PLANS or letter["step"] not in chains.steps(
                event["kind"]):
            continue
        chains.build(app, event, start_at=letter["step"]).apply_async()
        ledger.mark_replayed(letter["id"])
        replayed.append(int(letter["id"]))
    return replayed


def reconcile_stalled(settings: Settings,
                      older_than: Optional[float] = None) -> List[Dict[str, Any]]:
    """Find chains that stopped half-way and publish what they did not finish."""
    from tasks import chains
    from tasks.app import app
    ledger = _ledger(settings)
    resumed = []
    for row in ledger.stalled(settings.ledger.stalled_after if older_than is None else older_than):
        event = json.loads(row["event"])
        if event.get("kind") not in chains.PLANS:
            continue
        start = chains.remaining(event["kind"], row["done_steps"].split(","))
        if start is None:
            continue
        chains.build(app, event, start_at=start).apply_async()
        resumed.append({"event_id": row["event_id"], "instance_uuid": row["instance_uuid"],
                        "kind": row["kind"], "resumed_at_step": start,
                        "stalled_for_s": round(time.time() - row["updated_at"], 1)})
    return resumed
