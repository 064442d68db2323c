"""Task messages are signed, and a worker acts on none it cannot verify.

Whoever can write to the broker could otherwise run any step with any event:
five hand-made LPUSHes deleted a live VM from every backend. Every task
message therefore carries ``novahooks_signature``, an HMAC-SHA256, under
``[broker] signing_key``, of the task name, its id, retries, eta and expires
headers and the exact body bytes: a body signed for ``ldap.register`` does not
verify as ``ldap.deregister``. The relays, the workers and the CLI share the
key; Nova's hooks only write the outbox and never read it.

Why an HMAC and not Celery's ``auth`` serializer (X.509): every worker
publishes too (the next step of a chain, retries, audit records), so each
would need a private key of its own and every worker every certificate, for no
gain over one shared key among the same trusted processes; the relay's
pre-built chain messages (tasks/publisher.py) can be signed as they are, and
an RSA signature costs far more per message (bench/signing.py measures both).

Publishing: ``before_task_publish`` signs everything Celery sends, and
tasks/publisher.py signs the chains it replays. Receiving: :class:`Consumer`
puts a size and signature check before every task's strategy, so it runs
before Celery builds a request; a refused message raises ``InvalidTaskError``, which Celery logs as
"Received invalid task message" and rejects (dead-lettered on RabbitMQ,
dropped on Redis), and :class:`Consumer` counts it with every other message
Celery cannot use in ``novahooks_messages_refused_total{queue,reason}``.

Remote control (``celery.pidbox``: ping, inspect, shutdown, pool_shrink,
revoke...) is signed the same way: :class:`Control` is the app's ``control``,
its :class:`Mailbox` signs each broadcast's body and expiry, and a worker's
node acts on none it cannot verify or whose expiry lies past the clock skew
allowed (a signed message replayed later). Replies are not signed.

Rotation: ``[broker] previous_signing_key`` is accepted as well as the key
(:func:`keys`), never used to sign.
"""

import hashlib
import hmac
import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from celery import signals
from celery.app.control import Control as CeleryControl
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import pidbox
from kombu.serialization import dumps

from novahooks.logs import FIELDS
from tasks.errors import Misconfigured

LOG = logging.getLogger("novahooks.broker")
HEADER = "novahooks_signature"
VERSION = "v1"
#: headers a signature covers besides the body, in this order
SIGNED_HEADERS = ("task", "id", "retries", "eta", "expires")


def key() -> bytes:
    """The shared key everything is signed with; a process that must sign or verify and
    has none fails loudly."""
    from tasks.config import settings
    secret = settings().broker.signing_key.reveal()
    if not secret:
        raise Misconfigured("[broker] signing_key is not set (signing_key_file or "
                            "NOVAHOOKS_BROKER_SIGNING_KEY): task messages cannot be signed "
                            "or verified")
    return secret.encode("utf-8")


def keys() -> List[bytes]:
    """What a signature may be made with: the key, then ``[broker] previous_signing_key``.

    Rotation: workers get the new key as ``signing_key`` and the old one as
    ``previous_signing_key``, so messages the relays signed before they were given the
    new key still verify; once the queues hold none (``novahooks_messages_previous_key_total``
    stops rising), the previous key is removed.
    """
    from tasks.config import settings
    previous = settings().broker.previous_signing_key.reveal()
    return [key()] + ([previous.encode("utf-8")] if previous else [])


def digest(secret: bytes, headers: Dict[str, Any], body: bytes) -> str:
    material = "\n".join([VERSION] + [str(headers.get(name)) for name in SIGNED_HEADERS])
    mac = hmac.new(secret, material.encode("utf-8") + b"\n" + body, hashlib.sha256)
    return "%s:%s" % (VERSION, mac.hexdigest())


_warned: List[bool] = []


def sign(headers: Dict[str, Any], body: bytes, secret: Optional[bytes] = None) -> None:
    """Put the signature of ``body`` (the bytes the broker will carry) into ``headers``.

    Without a key the message goes out unsigned, and every worker refuses it: said once
    per process here, and by ``novahooks check``.
    """
    if secret is None:
        try:
            secret = key()
        except Misconfigured as exc:
            if not _warned:
                _warned.append(True)
                LOG.error("publishing UNSIGNED task messages, which every worker refuses: %s",
                          exc)
            return
    headers[HEADER] = digest(secret, headers, body)


@signals.before_task_publish.connect
def _sign_published(body: Any = None, headers: Optional[Dict[str, Any]] = None,
                    **_: Any) -> None:
    """Celery serialises ``body`` right after this signal, with the same (json) serializer."""
    if headers is None or "task" not in headers:
        return
    _, encoding, data = dumps(body, serializer="json")
    sign(headers, data.encode(encoding) if isinstance(data, str) else data)


def matching(signature: str, secrets: Sequence[bytes], material: Callable[[bytes], str]) -> int:
    """Index in ``secrets`` of the key ``signature`` was made with, or -1 (constant time
    per key: every key is tried)."""
    found = -1
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(signature.encode("utf-8", "replace"),
                               material(secret).encode("utf-8")) and found < 0:
            found = index
    return found


def _note_previous(queue: str) -> None:
    from tasks import metrics
    metrics.previous_key(queue)
    if not _warned_previous:
        _warned_previous.append(True)
        LOG.warning("accepted a message signed with [broker] previous_signing_key (queue %s): "
                    "some relay or worker still signs with the old key", queue)


_warned_previous: List[bool] = []


def refusal(message: Any, secrets: Union[bytes, Sequence[bytes]],
            limit: int) -> Optional[Tuple[str, str]]:
    """(reason, detail) when ``message`` must not be acted on, else None; ``secrets`` is
    the key or the keys (:func:`keys`) a signature may be made with."""
    if isinstance(secrets, bytes):
        secrets = [secrets]
    body = message.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, bytes):
        return "undecodable", "no body"
    if len(body) > limit:
        return "oversized", "body of %d bytes, above [broker] max_message_bytes %d" % (
            len(body), limit)
    headers = message.headers if isinstance(message.headers, dict) else {}
    signature = headers.get(HEADER)
    if not isinstance(signature, str):
        return "unsigned", "no %s header" % HEADER
    used = matching(signature, secrets, lambda secret: digest(secret, headers, body))
    if used < 0:
        return "forged", "%s does not match the message" % HEADER
    if used > 0:
        _note_previous(_queue(message))
    return None


def _queue(message: Any) -> str:
    info = getattr(message, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("queue") or "?")[:64]


def _count(message: Any, reason: str, detail: str, task: str = "?",
           queue: Optional[str] = None) -> None:
    queue = queue or _queue(message)
    headers = message.headers if isinstance(getattr(message, "headers", None), dict) else {}
    LOG.error("task message refused on queue %s: %s (%s)", queue, reason, detail,
              extra={FIELDS: {"queue": queue, "outcome": "refused", "reason": reason,
                              "task": task[:64], "task_id": str(headers.get("id"))[:64]}})
    from tasks import metrics
    metrics.refused(queue, reason)


class _Refused(InvalidTaskError):
    """Already logged and counted (Consumer.on_invalid_task must not count it again)."""


def verified(handle: Callable[..., Any], name: str, secrets: Sequence[bytes],
             limit: int) -> Callable[..., Any]:
    """A task's strategy (Celery's message handler) behind the size and signature check."""

    def handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any,
                **options: Any) -> Any:
        found = refusal(message, secrets, limit)
        if found is not None:
            _count(message, found[0], found[1], name)
            raise _Refused("%s message refused: %s: %s" % (name, found[0], found[1]))
        return handle(message, body, ack, reject, callbacks, **options)
    return handler


class Consumer(CeleryConsumer):
    """Celery's consumer (celeryconfig ``worker_consumer``): every task's strategy, Celery's
    built-ins (celery.chain...) included, verifies first; every message it cannot use is
    logged and counted."""

    def update_strategies(self) -> None:
        """Built when the worker starts consuming: a worker without the key stops there."""
        from tasks.config import settings
        super().update_strategies()
        secrets, limit = keys(), settings().broker.max_message_bytes
        for name in list(self.strategies):
            self.strategies[name] = verified(self.strategies[name], name, secrets, limit)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        _count(message, "undecodable", "%s: %s" % (type(exc).__name__, str(exc)[:200]))
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _count(message, "unknown-format", "no task header and no task in the body")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """Refused without Celery's own handler, which reads the body again when the
        headers lack an id and raises out of the event loop if it is not JSON."""
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        _count(message, "unknown-task", "no task named %s" % json.dumps(str(name)[:64]),
               str(name))
        message.reject_log_error(LOG, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        if not isinstance(exc, _Refused):
            _count(message, "invalid", "%s: %s" % (type(exc).__name__, str(exc)[:200]))
        super().on_invalid_task(body, message, exc)


#: Where a refused remote-control message is counted (``queue`` label).
CONTROL_QUEUE = "celery.pidbox"
#: How far a control message's ``expires`` may lie in the past (clock skew between
#: hosts): beyond it, a signed message read off the broker cannot be replayed. Twice the
#: 5 minutes of skew a deployment is to tolerate (issue 18), so a host that far ahead
#: still answers ``novahooks status``.
CONTROL_SKEW = 600.0


def control_digest(secret: bytes, headers: Dict[str, Any], body: Any) -> str:
    """The signature of a remote-control message: its decoded body (kombu carries it as
    JSON, so sorted-key JSON is the same bytes on both sides) and its expiry."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    material = "control\n%s\n%s" % (headers.get("expires"), canonical)
    mac = hmac.new(secret, material.encode("utf-8"), hashlib.sha256)
    return "%s:%s" % (VERSION, mac.hexdigest())


def control_refusal(body: Any, message: Any,
                    secrets: Sequence[bytes]) -> Optional[Tuple[str, str]]:
    """(reason, detail) when a remote-control message must not be acted on, else None."""
    headers = message.headers if isinstance(getattr(message, "headers", None), dict) else {}
    signature = headers.get(HEADER)
    if not isinstance(body, dict):
        return "invalid", "control body is not an object"
    if not isinstance(signature, str):
        return "unsigned", "no %s header" % HEADER
    if matching(signature, secrets, lambda secret: control_digest(secret, headers, body)) < 0:
        return "forged", "%s does not match the message" % HEADER
    expires = headers.get("expires")
    if not isinstance(expires, (int, float)) or not expires or \
            expires < time.time() - CONTROL_SKEW:
        return "expired", "expires %r is not a time in the last %d s" % (expires,
                                                                        CONTROL_SKEW)
    return None


class _Signing(object):
    """A producer that signs each control message it publishes (kombu builds the body)."""

    def __init__(self, producer: Any, secret: bytes) -> None:
        self._producer, self._secret = producer, secret

    def publish(self, body: Any, **options: Any) -> Any:
        headers = dict(options.pop("headers", None) or {})
        headers[HEADER] = control_digest(self._secret, headers, body)
        return self._producer.publish(body, headers=headers, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


class _VerifyingNode(pidbox.Node):
    """A worker's mailbox: acts only on control messages signed with the key."""

    def handle_message(self, body: Any, message: Any = None) -> Any:
        try:
            secrets = keys()
        except Misconfigured as exc:
            found = ("unsigned", str(exc))  # type: Optional[Tuple[str, str]]
        else:
            found = control_refusal(body, message, secrets)
        if found is not None:
            method = str(body.get("method") if isinstance(body, dict) else "?")[:64]
            _count(message, found[0], "control command %s: %s" % (json.dumps(method), found[1]),
                   "control:" + method, CONTROL_QUEUE)
            return None
        return super().handle_message(body, message)


class Mailbox(pidbox.Mailbox):
    """Celery's remote-control mailbox (ping, inspect, shutdown, pool_shrink, revoke...):
    what it sends is signed, and a worker's node acts on nothing else.

    Unsigned, anyone who can write to the broker could stop every pool (``shutdown``),
    shrink them to nothing or revoke tasks; the broker password was its only guard.
    """

    node_cls = _VerifyingNode

    def _publish(self, type: str, arguments: Any, destination: Any = None,
                 reply_ticket: Any = None, channel: Any = None, timeout: Any = None,
                 serializer: Any = None, producer: Any = None, pattern: Any = None,
                 matcher: Any = None) -> None:
        secret = key()
        connection: Any = self.connection  # bound by Mailbox(connection)
        chan = channel or connection.default_channel
        with self.producer_or_acquire(producer, chan) as real:
            super()._publish(type, arguments, destination=destination,
                             reply_ticket=reply_ticket, channel=chan, timeout=timeout,
                             serializer=serializer, producer=_Signing(real, secret),
                             pattern=pattern, matcher=matcher)


class Control(CeleryControl):
    """``app.control`` (tasks/app.py: ``Celery(control=...)``) with the signed mailbox."""

    Mailbox = Mailbox
