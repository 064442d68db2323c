"""What every local server launcher shares: free ports, readiness, clean stop."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Mapping, Optional, TypeVar

CACHE_DIR = Path(os.environ.get("NOVAHOOKS_CACHE", Path.home() / ".cache" / "novahooks"))


class ServerError(RuntimeError):
    """A local server could not be installed, started or reached."""


def find_python(version: str, override: str = "") -> str:
    """An interpreter of ``version`` ("3.12"), from an override variable, PATH or pyenv.

    The suite runs other Pythons than its own (NetBox and Nova 34 need 3.12, Nova 21 needs
    3.8); no machine's absolute path is written down, so ask PATH, then pyenv.
    """
    candidates: List[str] = []
    if override and os.environ.get(override):
        candidates.append(os.environ[override])
    found = shutil.which("python" + version)
    if found:
        candidates.append(found)
    try:
        prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True,
                                timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        prefix = ""
    if prefix:
        candidates.append(os.path.join(prefix, "bin", "python" + version))
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += [str(p / "bin" / ("python" + version))
                   for p in sorted(root.glob(version + ".*"), reverse=True)]
    for cand in candidates:
        try:
            out = subprocess.run([cand, "-c", "import sys, venv; print('%d.%d' % "
                                  "sys.version_info[:2])"], capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return cand
    raise ServerError("no Python %s with venv found (tried %s)%s" % (
        version, ", ".join(candidates) or "PATH and pyenv",
        "; set %s" % override if override else ""))


def free_port() -> int:
    """Ask the kernel for a free TCP port on loopback (and hope UDP is free too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             proc: Optional["subprocess.Popen[bytes]"] = None, log: Optional[Path] = None) -> None:
    """Poll until `check` holds; fail with the server's log if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{what} exited with {proc.returncode}{tail(log)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            pass
        time.sleep(0.05)
    raise ServerError(f"{what} not ready after {timeout:.0f}s{tail(log)}")


def tail(log: Optional[Path], lines: int = 30) -> str:
    """The end of a server log, for error messages that explain themselves."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- " + str(log) + " ---\n" + "\n".join(text)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class Server:
    """What every launcher's handle shares: its ``process``, stopped by ``stop()`` or by
    leaving a ``with`` block. Subclasses add their connection facts."""

    process: "Process"

    def stop(self) -> None:
        self.process.stop()

    def ready(self: "S", check: Callable[[], bool], timeout: float, what: str,
              log: Optional[Path] = None) -> "S":
        """Wait until ``check`` holds; a server that never answers is stopped, not leaked."""
        try:
            wait_for(check, timeout, what, self.process.proc, log)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self: "S") -> "S":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


S = TypeVar("S", bound=Server)


class Process:
    """A foreground server process whose output goes to a log file."""

    def __init__(self, name: str, argv: List[str], log: Path,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> None:
        self.name = name
        self.log = log
        if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
            raise ServerError(f"{name}: {argv[0]} is not installed")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._fh = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=cwd, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the whole process group, then insist."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._fh.close()
