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
"""

import hashlib
import hmac
import json
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from celery import signals
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.serialization import dumps

from novahooks.logs import FIELDS
from tasks.errors import Misconfigured

LOG = logging.getLogger("novahooks.broker")
HEADER = "novahooks_signature"
VERSION = "v1"
#: headers a signature covers besides the body, in this order
SIGNED_HEADERS = ("task", "id", "retries", "eta", "expires")


def key() -> bytes:
    """The shared key; a process that must sign or verify and has none fails loudly."""
    from tasks.config import settings
    secret = settings().broker.signing_key.reveal()
    if not secret:
        raise Misconfigured("[broker] signing_key is not set (signing_key_file or "
                            "NOVAHOOKS_BROKER_SIGNING_KEY): task messages cannot be signed "
                            "or verified")
    return secret.encode("utf-8")


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


def refusal(message: Any, secret: bytes, limit: int) -> Optional[Tuple[str, str]]:
    """(reason, detail) when ``message`` must not be acted on, else None."""
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
    if not hmac.compare_digest(signature.encode("utf-8", "replace"),
                               digest(secret, headers, body).encode("utf-8")):
        return "forged", "%s does not match the message" % HEADER
    return None


def _queue(message: Any) -> str:
    info = getattr(message, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("queue") or "?")[:64]


def _count(message: Any, reason: str, detail: str, task: str = "?") -> None:
    queue = _queue(message)
    headers = message.headers if isinstance(getattr(message, "headers", None), dict) else {}
    LOG.error("task message refused on queue %s: %s (%s)", queue, reason, detail,
              extra={FIELDS: {"queue": queue, "outcome": "refused", "reason": reason,
                              "task": task[:64], "task_id": str(headers.get("id"))[:64]}})
    from tasks import metrics
    metrics.refused(queue, reason)


class _Refused(InvalidTaskError):
    """Already logged and counted (Consumer.on_invalid_task must not count it again)."""


def verified(handle: Callable[..., Any], name: str, secret: bytes,
             limit: int) -> Callable[..., Any]:
    """A task's strategy (Celery's message handler) behind the size and signature check."""

    def handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any,
                **options: Any) -> Any:
        found = refusal(message, secret, limit)
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
        secret, limit = key(), settings().broker.max_message_bytes
        for name in list(self.strategies):
            self.strategies[name] = verified(self.strategies[name], name, secret, limit)

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
