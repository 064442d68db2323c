"""The line protocol both Nova harness drivers speak (``boot_servers.py`` for Nova 21 on
Python 3.8, ``nova34_servers.py`` for Nova 34 on Python 3.12): stdout carries only JSON
protocol lines, one command per stdin line, one reply per command.

Stdlib only and importable before any Nova module (Nova 34's harness must be the first Nova
module imported). Kept Python 3.8 compatible.
"""

import contextlib
import json
import os
import stat
import sys
import tempfile
import time
import traceback

#: What the caller set, before any harness fixture touches it (this module is imported
#: before Nova's test packages).
ENV0 = dict(os.environ)
TEMPDIR0 = tempfile.gettempdir()

# Reserve the real stdout for protocol lines; fd 1 (print, C libraries) now goes to stderr.
_PROTO = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)


class CommandError(Exception):
    """A command failed; ``args[1]``, when given, is the server's state to report."""


def emit(event, **fields):
    fields = dict(event=event, **fields)
    _PROTO.write(json.dumps(fields, sort_keys=True, default=str) + "\n")
    _PROTO.flush()


def wait(check, timeout, what, interval=0.05):
    """Poll ``check`` until it returns something true; ``time.sleep`` is green under eventlet,
    so Nova's services run meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        done = check()
        if done:
            return done
        if time.monotonic() > deadline:
            raise CommandError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def guarded(command, func, *args):
    """Run one command; report a failure as an ``error`` event and carry on serving."""
    try:
        return func(*args)
    except CommandError as exc:
        extra = {"server": exc.args[1]} if len(exc.args) > 1 else {}
        emit("error", command=command.strip(), message=str(exc.args[0]), **extra)
    except Exception as exc:  # noqa: BLE001 - report, keep serving
        emit("error", command=command.strip(),
             message="%s: %s\n%s" % (type(exc).__name__, exc, traceback.format_exc()))
    return None


def stdin_lines():
    """Lines from stdin, read without blocking Nova's green threads while we wait."""
    import eventlet.hubs
    fd = sys.stdin.fileno()
    mode = os.fstat(fd).st_mode
    pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
    buf = b""
    while True:
        while b"\n" not in buf:
            if pollable:
                eventlet.hubs.trampoline(fd, read=True)
            chunk = os.read(fd, 65536)
            if not chunk:
                if buf.strip():
                    yield buf.decode()
                return
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        yield line.decode()


@contextlib.contextmanager
def importing_nova():
    """Around the harness's imports: a failure is one ``fatal`` event and exit code 2."""
    try:
        yield
    except Exception:  # noqa: BLE001
        emit("fatal", message="importing Nova's harness failed:\n" + traceback.format_exc())
        sys.exit(2)


def restore_caller_environment(test, fixtures):
    """Undo what oslotest's fixtures do to the environment the hooks and notifiers see.

    oslotest points HOME at a temporary directory and tempfile.tempdir at a nested temporary
    directory (both deleted at tear-down); a real nova service has neither. http_proxy and
    friends stay unset as the harness wants (its HTTP is intercepted in-process). Returns
    what was restored.
    """
    restored = []
    if ENV0.get("HOME") and os.environ.get("HOME") != ENV0["HOME"]:
        test.useFixture(fixtures.EnvironmentVariable("HOME", ENV0["HOME"]))
        restored.append("HOME")
    if tempfile.gettempdir() != TEMPDIR0:
        test.useFixture(fixtures.MonkeyPatch("tempfile.tempdir", TEMPDIR0))
        restored.append("tempfile.tempdir")
    return restored


def log_to_file(test, path):
    """Every log record (DEBUG and up) also to ``path``, for the length of the test."""
    import logging
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s [%(name)s] %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    test.addCleanup(root.removeHandler, handler)
    test.addCleanup(handler.close)


def serve(case):
    """Run the one long test ``case`` serves the protocol in; exit code 2 if it failed."""
    import unittest
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(
        unittest.TestSuite([case]))
    if not result.wasSuccessful():
        problems = result.errors + result.failures
        emit("fatal", message="\n".join(text for _, text in problems) or "test did not succeed")
        return 2
    return 0
