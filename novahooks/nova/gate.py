"""Pre-boot gate: hold a build until the records that must exist before boot exist.

Some registrations must precede the first boot (a directory computer object
that a Windows VM joins at first boot, a CMDB record that provisioning looks
up). With ``[gate] steps`` set, ``build_instance``'s pre-hook appends a
``create`` event for the instance to the outbox, like any other event, and
then waits, at most ``[gate] timeout`` seconds, until the relay says those
steps of that very event finished. The relay answers from the ledger's
progress and dead letters on a Unix socket (``tasks/gate_service.py``);
this side needs only the standard library and runs on Python 3.6 to 3.8.

Which hook point. The issue names ``create_instance``'s pre-hook, but there
no instance exists yet: Nova 21 passes ``(api, context, flavor, image_href)``
and keyword arguments (display_name, ...), so there is no uuid, which every
record is keyed by, and no hostname (Nova derives it later); and it runs on
nova-api's request thread, so a wait there holds the user's REST call. Its
post-hook has the uuid, but by then the build has been cast to the compute
host and races it (the observed order is create_instance.pre,
build_instance.pre, create_instance.post), so it cannot hold a boot.
``build_instance``'s pre-hook runs in nova-compute on a green thread of its
own (``build_and_run_instance`` is an RPC cast and spawns it), with the
``Instance`` loaded (uuid, hostname, flavor, image) and before
``_do_build_and_run_instance`` claims resources, allocates ports or spawns
anything: the one point where a known instance can be held before boot.

What Nova 21.2.4 does when this hook raises ``FatalHookException`` (its
source, and tests/test_gate_backends.py against real Nova): ``nova.hooks``
logs "Fatal Exception running build_instance pre-hook" and re-raises. The
hook decorator is the outermost one, so none of ``_do_build_and_run_instance``
runs, nor its fault and task-state decorators: no claim, no port, no fault,
no ERROR state. The caller, ``_locked_do_build_and_run_instance``, counts a
failed build: it deletes the instance's Placement allocation and calls
``_build_failed`` (the scheduler's BuildFailureWeigher then ranks the host
lower until a build there succeeds); there is no reschedule, and the
exception ends the green thread. The instance stays in vm_state
``building``, task_state ``scheduling``, with no host: the API shows BUILD
until someone deletes it, and nova-api then deletes it locally (no host), so
no ``delete_instance`` hook fires for it. Hence the abort undoes its own
work: it appends a ``delete`` event, whose chain tombstones the uuid (a
register step still queued for it, e.g. from create_instance's post-hook on
nova-api, then does nothing) and removes what any step made.

Nothing here blocks beyond the bound: every poll's socket timeout is the
time left, sleeps are green under eventlet, and the verdict for the audit
trail is posted from a thread of its own after the decision.
"""

import http.client
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

LOG = logging.getLogger("novahooks.gate")

#: Linux's limit for an AF_UNIX path (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
#: How long the after-the-fact verdict report may take; it never holds Nova.
REPORT_TIMEOUT = 2.0


class GateConfig(NamedTuple):
    steps: Tuple[str, ...]
    timeout: float
    on_failure: str
    poll_interval: float
    socket: str


class Verdict(NamedTuple):
    """``passed``, ``failed`` (a step gave up: a dead letter), ``timeout``, or ``error``
    (the gate itself could not run, e.g. an outbox that takes no write)."""

    outcome: str
    done: List[str]
    missing: List[str]
    reason: str
    waited: float


class GateUnavailable(Exception):
    """The relay's gate endpoint did not answer usefully."""


_UNSET = object()
_config = _UNSET  # type: Any
_config_lock = threading.Lock()


def socket_path(settings: Any) -> str:
    """``[gate] socket``, or ``gate.sock`` beside the outbox that hook and relay share."""
    from novahooks.settings import SettingsError
    path = settings.gate.socket or os.path.join(
        os.path.dirname(os.path.abspath(settings.outbox.path)), "gate.sock")
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise SettingsError("[gate] socket: %s is longer than %d bytes, the limit of a Unix "
                            "socket path; set a shorter one" % (path, MAX_SOCKET_PATH))
    return path


def config() -> Optional[GateConfig]:
    """This process's gate, or None for no gate; read once, and never raises into Nova.

    A configuration that cannot be read leaves builds ungated (logged): the
    post-hooks report the same error when they try to record their events.
    """
    global _config
    if _config is _UNSET:
        with _config_lock:
            if _config is _UNSET:
                try:
                    from novahooks.nova.config import load_hook_settings
                    settings = load_hook_settings()
                    gate = settings.gate
                    _config = GateConfig(tuple(gate.steps), gate.timeout, gate.on_failure,
                                         gate.poll_interval, socket_path(settings)) \
                        if gate.steps else None
                except Exception:  # noqa: BLE001 - Nova must never see our failures
                    LOG.exception("novahooks: cannot read the [gate] configuration; builds "
                                  "are not gated")
                    _config = None
    return _config


def reset() -> None:
    """Forget the cached configuration (tests and config reloads)."""
    global _config
    with _config_lock:
        _config = _UNSET


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket; under eventlet ``socket`` is green, so is this."""

    def __init__(self, path: str, timeout: float) -> None:
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)  # the whole exchange's budget; _request narrows it
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def _request(path: str, method: str, url: str, timeout: float,
             body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One exchange, all of it within ``timeout`` (each socket wait gets only what is left)."""
    deadline = time.monotonic() + timeout
    conn = _UnixConnection(path, timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, url, body=data, headers=headers)
        conn.sock.settimeout(_left(deadline))
        response = conn.getresponse()
        raw = response.read(1 << 20)
        if response.status != 200:
            raise GateUnavailable("HTTP %d: %s" % (response.status,
                                                   raw[:200].decode(errors="replace")))
        answer = json.loads(raw.decode())
        if not isinstance(answer, dict):
            raise GateUnavailable("answer is not a JSON object")
        return answer
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise GateUnavailable("%s: %s" % (type(exc).__name__, exc)) from exc
    finally:
        conn.close()


def fetch_status(path: str, event_id: str, timeout: float) -> Dict[str, Any]:
    """Which steps of one event finished, and which gave up, as the relay's ledger says."""
    return _request(path, "GET", "/v1/events/%s" % event_id, timeout)


def wait(cfg: GateConfig, event_id: str, started: float,
         fetch: Callable[[str, str, float], Dict[str, Any]] = fetch_status) -> Verdict:
    """Poll until the gated steps are done, one of the event's steps gave up, or time is up.

    An endpoint that does not answer (relay restarting) is polled again until
    the deadline: only the deadline turns it into a failure.
    """
    deadline = started + cfg.timeout
    done = []  # type: List[str]
    trouble = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            status = fetch(cfg.socket, event_id, remaining)
        except GateUnavailable as exc:
            trouble = "gate endpoint %s: %s" % (cfg.socket, exc)
        else:
            trouble = ""
            done = [step for step in status.get("done") or [] if isinstance(step, str)]
            missing = [step for step in cfg.steps if step not in done]
            if not missing:
                return Verdict("passed", done, [], "", time.monotonic() - started)
            failed = [f for f in status.get("failed") or [] if isinstance(f, dict)]
            if failed:
                reason = "%s gave up: %s" % (failed[0].get("step"),
                                             str(failed[0].get("error"))[:300])
                return Verdict("failed", done, missing, reason, time.monotonic() - started)
            if status.get("finished") is True:
                # The closing step ran without them: the chain was built without these
                # steps (a VM left out by policy). Nothing more will come; waiting on
                # would only time out.
                return Verdict("passed", done, missing, "the chain finished without %s"
                               % ", ".join(missing), time.monotonic() - started)
        time.sleep(max(0.0, min(cfg.poll_interval, deadline - time.monotonic())))
    missing = [step for step in cfg.steps if step not in done]
    reason = "timed out after %.1f s waiting for %s" % (cfg.timeout, ", ".join(missing))
    if trouble:
        reason += " (%s)" % trouble
    return Verdict("timeout", done, missing, reason, time.monotonic() - started)


class FatalHookException(Exception):
    """Stands in for ``nova.hooks.FatalHookException`` where Nova has no hooks module."""


def fatal_hook_exception() -> type:
    """Nova's ``FatalHookException`` where Nova is importable, else the class above.

    Imported only when needed: the hook side imports nothing from Nova at import time.
    """
    try:
        from nova import hooks as nova_hooks
    except ImportError:
        return FatalHookException
    return getattr(nova_hooks, "FatalHookException", FatalHookException)


def _report(path: str, event: Dict[str, Any], verdict: Verdict, policy: str) -> None:
    try:
        _request(path, "POST", "/v1/events/%s/verdict" % event.get("event_id"), REPORT_TIMEOUT,
                 {"event": event, "outcome": verdict.outcome, "policy": policy,
                  "reason": verdict.reason, "missing": verdict.missing})
    except GateUnavailable as exc:
        LOG.warning("novahooks: gate verdict for %s not audited: %s", event.get("uuid"), exc)


def report(cfg: GateConfig, event: Dict[str, Any], verdict: Verdict) -> None:
    """Have the relay audit a failed gate, from a thread of its own (green under eventlet)."""
    thread = threading.Thread(target=_report, args=(cfg.socket, event, verdict, cfg.on_failure),
                              name="novahooks-gate-report")
    thread.daemon = True
    thread.start()


def hold(cfg: GateConfig, make_event: Callable[[str], Any], emit: Callable[[Any], None]) -> None:
    """Run the gate for one build: return to let it go on, raise FatalHookException to stop it.

    ``make_event(kind)`` builds the instance's event (None without a uuid);
    ``emit`` appends it to the outbox.
    """
    started = time.monotonic()
    event = None
    try:
        event = make_event("create")
        if event is None:
            return
        emit(event)
        verdict = wait(cfg, event.event_id, started)
    except Exception as exc:  # noqa: BLE001 - decided by policy below, never raised as is
        LOG.exception("novahooks: pre-boot gate could not run")
        verdict = Verdict("error", [], list(cfg.steps), "gate could not run: %s" % exc,
                          time.monotonic() - started)
    uuid = event.uuid if event is not None else "?"
    if verdict.outcome == "passed":
        LOG.info("novahooks: pre-boot gate passed for %s in %.2f s (%s)", uuid, verdict.waited,
                 verdict.reason or ", ".join(cfg.steps) + " done")
        return
    if cfg.on_failure != "abort":
        LOG.warning("novahooks: pre-boot gate %s for %s: %s; policy continue: the build goes "
                    "on and the chain keeps trying", verdict.outcome, uuid, verdict.reason)
        if event is not None:
            report(cfg, event.to_dict(), verdict)
        return
    undo = "undone"
    try:
        emit(make_event("delete"))
    except Exception:  # noqa: BLE001 - the build is stopped all the same
        LOG.exception("novahooks: could not record the undo of %s", uuid)
        undo = "NOT undone (see the error above)"
    message = "novahooks pre-boot gate %s for instance %s: %s; policy abort: build stopped, " \
        "registrations %s" % (verdict.outcome, uuid, verdict.reason, undo)
    LOG.error("%s", message)
    if event is not None:
        report(cfg, event.to_dict(), verdict._replace(reason=verdict.reason + "; " + undo))
    raise fatal_hook_exception()(message)
