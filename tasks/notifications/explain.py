"""``novahooks explain``: what one notification would make the listener do.

Operators ask why a VM was or was not registered; the answer is the same
decision the listener takes (:func:`novahooks.notifications.plan.decide`),
shown instead of acted upon: nothing is appended, published or recorded.
With a configuration whose ledger database is reachable, the listener's state
is read (captured addresses, ports, floating IPs) so the answer matches what
the running listener would do; without one, the notification is explained on
its own.
"""

from typing import Any, Dict, Optional, Union

from novahooks.notifications import message
from novahooks.notifications.message import Malformed
from novahooks.notifications.plan import decide
from novahooks.notifications.state import EmptyState, describe


def explain(raw: Union[str, bytes, Dict[str, Any]],
            state: Optional[EmptyState] = None,
            settings: Optional[Any] = None) -> Dict[str, Any]:
    """A JSON-safe answer: the event and its steps, or why nothing is enqueued.

    Keys: ``notification`` (event type, publisher, message id; None if unreadable),
    ``event`` and ``steps`` (the first event; None and [] when ignored), ``events``
    (every event with its steps: a floating IP moving between VMs makes two),
    ``ignored`` (the reason, or None), ``malformed`` (True when the notification
    cannot be read), ``known`` (what the listener knew of the instance beforehand).
    With ``settings``, each event but a delete also has ``policy``: the workers'
    tasks/policy.py decision (register or not, the rule, host name, fqdn, reverse
    zones) or the error that would stop its chain.
    """
    from tasks.chains import steps
    state = state if state is not None else EmptyState()
    answer = {"notification": None, "event": None, "steps": [], "events": [],
              "ignored": None, "malformed": False,
              "known": None}  # type: Dict[str, Any]
    try:
        note = message.read(raw)
        answer["notification"] = note.summary()
        plan = decide(note, state)
    except Malformed as exc:
        answer.update(ignored="malformed notification: %s" % exc, malformed=True)
        return answer
    answer["events"] = [{"event": event.to_dict(), "steps": steps(event.kind)}
                        for event in plan.events]
    if settings is not None:
        from tasks.policy import explain as policy
        for entry in answer["events"]:
            if entry["event"]["kind"] != "delete":
                entry["policy"] = policy(entry["event"], settings)
    if answer["events"]:
        answer.update(answer["events"][0])
        answer["known"] = describe(state, plan.events[0].uuid)
    answer["ignored"] = plan.ignored
    return answer
