"""Publish an event's chain with the exact messages Celery builds, built once per event kind.

Celery spends most of a chain's ``apply_async`` in Python, not on the wire:
cloning five signatures, assigning their ids, building the task message and
``saferepr``-ing the event for its headers, serialising the event five times
over, and (kombu's Redis transport) a new redis-py client object per message.
The relay publishes thousands of chains that differ only in their event and
their ids, so this module lets Celery build each kind's chain once, around a
placeholder event, records what Celery hands the producer (the task message
and its ``task-sent`` event), and for each real event replays those two
publishes with the event's JSON text and fresh task ids put in. The messages
are Celery's own, field for field; what workers receive is unchanged.

Publishing inside ``producer.batch()`` (kombu >= 5.7: one Redis pipeline per
batch, on other transports an immediate publish each) adds the rest of the
saving; the relay does that.
"""

import json
import os
import time
import uuid
import weakref
from typing import Any, Dict, List, NamedTuple, Tuple

from celery import Celery
from kombu.serialization import dumps

from tasks import chains, signing

#: stands for the event in a template; its JSON form is replaced by the event's
_PLACEHOLDER_UUID = "00000000-0000-4000-8000-6e6f7661686b"


def _uuid4s(count: int) -> List[str]:
    """``count`` random (version 4) UUIDs, as Celery's ids are, from one urandom call."""
    data = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=data[i:i + 16], version=4)) for i in range(0, 16 * count, 16)]


class _Recorder(object):
    """Takes a producer's place while Celery publishes one chain: keeps each publish."""

    def __init__(self, producer: Any) -> None:
        self.connection = producer.connection
        self.channel = producer.channel
        self.calls = []  # type: List[Tuple[Any, Dict[str, Any]]]

    def publish(self, body: Any, **kwargs: Any) -> None:
        self.calls.append((body, kwargs))

    def __deepcopy__(self, memo: Dict[int, Any]) -> "_Recorder":
        return self  # signature options are deep-copied; this one must stay itself


class _Template(NamedTuple):
    body: str  # the task message body, JSON, with the placeholder event and ids
    placeholder: str  # the placeholder event's JSON form inside ``body``
    ids: Tuple[str, ...]  # task ids Celery assigned while building it (first: the root)
    task_kwargs: Dict[str, Any]  # publish() keywords of the task message
    content_type: str
    content_encoding: str
    event: Dict[str, Any]  # the task-sent event, or {} when sent events are off
    event_kwargs: Dict[str, Any]


class ChainPublisher(object):
    """One per process (the relay); not thread-safe while a kind's template is first built."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._templates = {}  # type: Dict[str, _Template]
        #: channel -> kinds whose queue and event exchange were declared on it: kombu
        #: re-binds (copies) every entity of ``declare`` on every publish, so after a
        #: kind's first publish on a channel its template publishes without them.
        self._declared = weakref.WeakKeyDictionary()  # type: weakref.WeakKeyDictionary

    def _template(self, kind: str, producer: Any) -> _Template:
        template = self._templates.get(kind)
        if template is None:
            template = self._templates[kind] = self._record(kind, producer)
        return template

    def _record(self, kind: str, producer: Any) -> _Template:
        placeholder_event = {"kind": kind, "uuid": _PLACEHOLDER_UUID}
        recorder = _Recorder(producer)
        chain = chains.build(self.app, placeholder_event)
        # chain.apply_async(producer=...) does not hand the producer on to the task it
        # sends (celery 5.7 canvas), a signature's own options do.
        chain.tasks[0].set(producer=recorder)
        chain.apply_async(retry=False)
        if not recorder.calls or not isinstance(recorder.calls[0][1].get("headers"), dict):
            raise RuntimeError("Celery published no task message for a %s chain" % kind)
        body, task_kwargs = recorder.calls[0]
        headers = task_kwargs["headers"]
        serializer = task_kwargs.pop("serializer", None) or self.app.conf.task_serializer
        if serializer != "json":
            raise RuntimeError("chain templates need the json serializer, not %r" % serializer)
        content_type, content_encoding, text = dumps(body, serializer="json")
        placeholder = dumps(placeholder_event, serializer="json")[2]
        ids = [headers["id"]] + [sig["options"]["task_id"] for sig in body[2]["chain"] or []]
        steps = len(chains.PLANS[kind])
        if text.count(placeholder) != steps or len(ids) != steps:
            raise RuntimeError("unexpected %s chain message: %d events, %d ids for %d steps"
                               % (kind, text.count(placeholder), len(ids), steps))
        event, event_kwargs = ({}, {})  # type: Tuple[Dict[str, Any], Dict[str, Any]]
        if len(recorder.calls) > 1:
            event, event_kwargs = recorder.calls[1]
        return _Template(text, placeholder, tuple(ids), task_kwargs, content_type,
                         content_encoding, event, event_kwargs)

    def publish(self, producer: Any, kind: str, event_json: str, **options: Any) -> str:
        """Publish the chain for one event given as its JSON text; returns the root task id.

        ``options`` go to each ``producer.publish`` (``retry``, ``confirm_timeout``...).
        """
        template = self._template(kind, producer)
        declared = self._declared.setdefault(producer.channel, set())
        first = kind not in declared
        fresh = dict(zip(template.ids, _uuid4s(len(template.ids))))
        body = template.body
        for old, new in fresh.items():  # ids first: the event text is not searched
            body = body.replace(old, new)
        body = body.replace(template.placeholder, event_json)
        argsrepr = repr((json.loads(event_json),))[:self.app.amqp.argsrepr_maxsize]
        headers = dict(template.task_kwargs["headers"], id=fresh[template.ids[0]],
                       root_id=fresh[template.ids[0]], argsrepr=argsrepr)
        kwargs = dict(template.task_kwargs, headers=headers,
                      correlation_id=fresh[template.ids[0]],
                      declare=list(template.task_kwargs.get("declare") or ()) if first else [])
        signing.sign(headers, body.encode(template.content_encoding))
        kwargs.update(options)
        producer.publish(body, serializer=None, content_type=template.content_type,
                         content_encoding=template.content_encoding, **kwargs)
        if template.event:
            sent = dict(template.event, uuid=fresh[template.ids[0]],
                        root_id=fresh[template.ids[0]], args=argsrepr,
                        clock=self.app.clock.forward(), timestamp=time.time())
            event_kwargs = dict(template.event_kwargs,
                                declare=list(template.event_kwargs.get("declare") or ())
                                if first else [])
            event_kwargs.update(options)
            producer.publish(sent, **event_kwargs)
        declared.add(kind)
        return fresh[template.ids[0]]
