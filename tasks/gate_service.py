"""The relay's gate endpoint: tells a waiting build_instance hook how its event is doing.

The hook (novahooks/nova/gate.py) runs inside nova-compute with nothing but
the standard library; the relay on the same host has the worker extras and
reads the ledger, where every step notes that it finished (``progress``) or
gave up (``dead_letters``). So the relay answers, and the hook asks.

A Unix socket rather than a TCP port: who may ask is decided by the file's
permissions (mode 0660 from its creation, the group the Nova and relay users
share for the outbox), nothing listens on the network, and no port must be chosen per
host. The protocol is plain HTTP/1.0 with JSON, which ``http.client`` speaks:

* ``GET /v1/events/<event_id>`` -> ``{"event_id", "done": [step, ...],
  "finished": bool (the chain's closing step ran), "failed": [{"step", "error"}, ...]}``
* ``POST /v1/events/<event_id>/verdict`` with ``{"event", "outcome",
  "policy", "reason"}``: the hook's decision on a gate that did not pass,
  written to the audit trail as a ``failed`` record of step ``gate``, for an
  event this host holds (outbox or ledger) and as it holds it; any other is
  answered 404 and not audited.
"""

import http.server
import json
import logging
import os
import re
import socket
import socketserver
import stat
import threading
from typing import Any, Callable, Dict, Optional

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from novahooks.nova.outbox import Outbox
from tasks.ledger import dead_letters, ledger, progress

LOG = logging.getLogger("novahooks.gate")

EVENT_ID = re.compile(r"^[0-9a-fA-F-]{1,64}$")
MAX_BODY = 64 * 1024

Audit = Callable[[Dict[str, Any], str], None]


class GateService(object):
    """Serves the gate endpoint from a thread of the relay process."""

    def __init__(self, path: str, ledger_url: str, audit: Audit,
                 outbox: Optional[Outbox] = None) -> None:
        self.path = path
        self.ledger = ledger(ledger_url)
        self.audit = audit
        #: Where an event waits until the relay published it (then the ledger has it).
        self.outbox = outbox
        self._server = None  # type: Optional[socketserver.UnixStreamServer]
        self._thread = None  # type: Optional[threading.Thread]

    def status(self, event_id: str) -> Dict[str, Any]:
        """What the ledger knows about one event: finished steps and dead letters."""
        with self.ledger.engine.connect() as conn:
            row = conn.execute(select(progress.c.done_steps, progress.c.finished_at)
                               .where(progress.c.event_id == event_id)).first()
            failed = conn.execute(select(dead_letters.c.step, dead_letters.c.error)
                                  .where(dead_letters.c.event_id == event_id)
                                  .where(dead_letters.c.replayed_at.is_(None))
                                  .order_by(dead_letters.c.id)).all()
        done = [s for s in (row[0] if row else "").split(",") if s]
        return {"event_id": event_id, "done": done, "finished": bool(row and row[1]),
                "failed": [{"step": step, "error": error} for step, error in failed]}

    def known(self, event_id: str) -> Optional[Dict[str, Any]]:
        """The event as this host recorded it: in the outbox, or in the ledger once published.

        A verdict names an event; what is audited is this stored copy, so whoever may
        reach the socket can neither audit an event that never was nor put words
        (another uuid, hostname, metadata) into the audit trail.
        """
        if self.outbox is not None:
            stored = self.outbox.find(event_id)
            if stored is not None:
                return stored
        with self.ledger.engine.connect() as conn:
            row = conn.execute(select(progress.c.event).where(progress.c.event_id == event_id)
                               ).first() or conn.execute(
                select(dead_letters.c.event).where(dead_letters.c.event_id == event_id)
                .limit(1)).first()
        try:
            found = json.loads(row[0]) if row else None
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def verdict(self, event_id: str, body: Dict[str, Any]) -> None:
        """Audit a gate that did not pass, with the policy the hook applied."""
        given = body.get("event")
        if not isinstance(given, dict) or given.get("event_id") != event_id:
            raise ValueError("'event' must be the gated event (event_id %s)" % event_id)
        outcome, policy = str(body.get("outcome", "")), str(body.get("policy", ""))
        if outcome not in ("failed", "timeout", "error") or policy not in ("continue", "abort"):
            raise ValueError("'outcome' or 'policy' is not one the gate knows")
        event = self.known(event_id)
        if event is None:
            LOG.warning("gate: verdict refused for event %s: in neither the outbox nor the "
                        "ledger (not audited)", event_id)
            raise UnknownEvent("no event %s in this host's outbox or ledger" % event_id)
        effect = "the build went on" if policy == "continue" else "the build was stopped"
        self.audit(event, "pre-boot gate %s: %s; policy %s: %s"
                   % (outcome, str(body.get("reason", ""))[:1000], policy, effect))
        LOG.warning("pre-boot gate %s for %s (policy %s): %s", outcome, event.get("uuid"),
                    policy, body.get("reason"))

    def start(self) -> "GateService":
        self._claim_path()
        # The socket file is made 0660 as it is bound (umask), never wider in between.
        old = os.umask(0o117)
        try:
            server = _Server(self.path, _handler(self))
        finally:
            os.umask(old)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="novahooks-gate",
                                        kwargs={"poll_interval": 0.2})
        self._thread.daemon = True
        self._thread.start()
        LOG.info("gate endpoint listening on %s", self.path)
        return self

    def _claim_path(self) -> None:
        """Take over a socket file left by a dead relay; refuse one a live relay serves."""
        if not os.path.exists(self.path):
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            return
        if not stat.S_ISSOCK(os.stat(self.path).st_mode):
            raise RuntimeError("[gate] socket %s exists and is not a socket; not replacing it"
                               % self.path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise RuntimeError("[gate] socket %s is served by another process (another relay "
                           "on this outbox?)" % self.path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class UnknownEvent(LookupError):
    """A verdict for an event this host never recorded: answered 404, not audited."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(service: GateService) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        def address_string(self) -> str:
            return "unix:%s" % service.path

        def log_message(self, fmt: str, *args: Any) -> None:
            LOG.debug("gate request: " + fmt, *args)

        def _answer(self, code: int, body: Dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _event_id(self, suffix: str = "") -> Optional[str]:
            parts = self.path.split("/")
            expected = ["", "v1", "events", parts[3] if len(parts) > 3 else ""]
            if suffix:
                expected.append(suffix)
            if parts != expected or not EVENT_ID.match(parts[3]):
                self._answer(404, {"error": "no such resource: %s" % self.path[:200]})
                return None
            return parts[3]

        def do_GET(self) -> None:
            event_id = self._event_id()
            if event_id is None:
                return
            try:
                self._answer(200, service.status(event_id))
            except SQLAlchemyError as exc:
                LOG.warning("gate: ledger unavailable: %s", str(exc).splitlines()[0])
                self._answer(503, {"error": "ledger unavailable"})

        def do_POST(self) -> None:
            event_id = self._event_id("verdict")
            if event_id is None:
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._answer(400, {"error": "body must be 1 to %d bytes of JSON" % MAX_BODY})
                return
            try:
                body = json.loads(self.rfile.read(length).decode())
                if not isinstance(body, dict):
                    raise ValueError("body is not a JSON object")
                service.verdict(event_id, body)
            except ValueError as exc:
                self._answer(400, {"error": str(exc)[:300]})
                return
            except UnknownEvent as exc:
                self._answer(404, {"error": str(exc)[:300]})
                return
            except Exception as exc:  # noqa: BLE001 - the broker may be down
                LOG.warning("gate: could not audit the verdict for %s: %s", event_id, exc)
                self._answer(503, {"error": "audit not recorded"})
                return
            self._answer(200, {"audited": True})

    return Handler


def start(settings: Any, send_audit: Audit) -> GateService:
    """The gate endpoint for these settings, serving.

    The hook waits on steps of the ``create`` chain; a gated step that chain
    does not run would only ever time out, so that is refused here.
    """
    from novahooks.nova.gate import socket_path
    from novahooks.settings import SettingsError
    from tasks.chains import steps
    absent = [step for step in settings.gate.steps if step not in steps("create")]
    if absent:
        raise SettingsError("[gate] steps: %s not in the pre-boot chain (%s)"
                            % (", ".join(absent), ", ".join(steps("create"))))
    return GateService(socket_path(settings), settings.ledger.url, send_audit,
                       Outbox(settings.outbox.path, settings.outbox.busy_timeout_ms)).start()
