"""One notification as it comes off the bus, with or without oslo.messaging's envelope.

Nova's ``messagingv2`` driver wraps the message as ``{"oslo.version": "2.0",
"oslo.message": "<JSON string>"}``; the older ``messaging`` driver sends the
inner dict itself. Operators paste either into ``novahooks explain``, and the
listener hands us the already unwrapped parts; all three end up as one
:class:`Notification`.
"""

import json
from typing import Any, Dict, NamedTuple, Union

#: Envelope versions oslo.messaging has ever written; a newer one may change the layout.
ENVELOPE_VERSIONS = ("2.0",)


class Malformed(ValueError):
    """The notification cannot be read; the message names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__("%s: %s" % (field, problem))
        self.field = field


class Notification(NamedTuple):
    event_type: str
    payload: Dict[str, Any]
    publisher_id: str = ""
    priority: str = "INFO"
    message_id: str = ""
    timestamp: str = ""

    def summary(self) -> Dict[str, str]:
        return {"event_type": self.event_type, "publisher_id": self.publisher_id,
                "priority": self.priority, "message_id": self.message_id}


def _text(data: Dict[str, Any], key: str, required: bool = False) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise Malformed(key, "missing or not text (%r)" % (value,))
    return value


def from_dict(data: Any) -> Notification:
    """A notification body (enveloped or not) already parsed from JSON."""
    if not isinstance(data, dict):
        raise Malformed("<root>", "expected a JSON object, got %s" % type(data).__name__)
    if "oslo.message" in data or "oslo.version" in data:
        version = data.get("oslo.version")
        if version not in ENVELOPE_VERSIONS:
            raise Malformed("oslo.version", "envelope version %r is not one of %s"
                            % (version, ", ".join(ENVELOPE_VERSIONS)))
        inner = data.get("oslo.message")
        if not isinstance(inner, str):
            raise Malformed("oslo.message", "expected the inner message as a JSON string")
        data = _parsed(inner, "oslo.message")
        if not isinstance(data, dict):
            raise Malformed("oslo.message", "expected a JSON object inside the envelope")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise Malformed("payload", "missing or not an object")
    priority = _text(data, "priority") or "INFO"
    return Notification(event_type=_text(data, "event_type", required=True), payload=payload,
                        publisher_id=_text(data, "publisher_id"), priority=priority.upper(),
                        message_id=_text(data, "message_id"),
                        timestamp=str(data.get("timestamp") or ""))


def read(raw: Union[str, bytes, Dict[str, Any]]) -> Notification:
    """Parse one notification from text, bytes or a dict."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed("<root>", "not UTF-8 text: %s" % exc) from None
    if isinstance(raw, str):
        raw = _parsed(raw, "<root>")
    return from_dict(raw)


def _parsed(text: str, where: str) -> Any:
    """The JSON ``text`` (the body, or the envelope's inner message) holds."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Malformed(where, "not valid JSON: %s" % exc) from None


def from_listener(priority: str, publisher_id: Any, event_type: Any, payload: Any,
                  metadata: Any) -> Notification:
    """What oslo.messaging's dispatcher hands an endpoint, as one notification."""
    meta = metadata if isinstance(metadata, dict) else {}
    return from_dict({"event_type": event_type, "payload": payload,
                      "publisher_id": publisher_id, "priority": priority,
                      "message_id": meta.get("message_id"),
                      "timestamp": meta.get("timestamp")})
