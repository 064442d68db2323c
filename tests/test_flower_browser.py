"""Flower's tasks page, as an operator sees it in a real browser.

Flower runs with its basic-auth credentials next to the session's worker pools;
a full build chain runs for a fresh VM through Nova's hooks; then headless
Chromium (Debian's ``chromium-headless-shell``, driven over the DevTools
protocol) loads ``/tasks``, and the test reads what the page rendered: every step
of the chain, each showing the instance UUID and hostname in its arguments, and
no configured secret anywhere in the page. A screenshot of the page is kept in
``artifacts/flower-tasks.png`` (and the page text next to it).
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from novahooks.nova import hooks
from novahooks.servers.stack import Processes, Stack
from novahooks.simulate import Vm, create, with_uuid
from tests.conftest import ROOT, mac, unique_v4
from tests.test_end_to_end import audit_lines, until

BUILD_STEPS = ("ipam.reserve", "dns.register", "ldap.register", "inventory.register",
               "audit.record")
#: create_instance's chain (before boot) runs these for the same VM too.
CREATE_STEPS = ("ldap.register", "inventory.register", "audit.record")
CHROMIUM_CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser")
ARTIFACTS = ROOT / "artifacts"


def _chromium() -> str:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless Chromium: install Debian's chromium-headless-shell "
                "(./run setup does)")


@pytest.fixture(autouse=True)
def hook_outbox(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(stack.config_path))
    hooks.reset_outbox()


@pytest.fixture
def flower(processes: Processes) -> Iterator[str]:
    """Flower with FLOWER_BASIC_AUTH, capturing events; stopped again afterwards."""
    url = processes.start_flower()
    try:
        until(lambda: requests.get(url + "/api/workers", auth=processes.flower_auth,
                                   timeout=15).status_code == 200,
              30, "Flower answering its API")
        # Ask the workers for a heartbeat event until Flower shows one: then its event
        # receiver is subscribed and no task event of the chain can be missed.
        from tasks.app import app

        def receiving() -> bool:
            app.control.heartbeat()
            time.sleep(0.5)
            return 'flower_worker_online{worker="' in requests.get(url + "/metrics",
                                                                   timeout=15).text
        until(receiving, 30, "Flower receiving the workers' events")
        yield url
    finally:
        if processes.flower is not None:
            processes.flower.stop(signal.SIGINT)
        processes.flower = None
        processes.flower_url = ""


class Browser(object):
    """Headless Chromium, one page, driven over the DevTools protocol (websocket)."""

    def __init__(self, profile: Path, log: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._log_handle = open(str(log), "wb")
        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-sync", "--disable-background-networking", "--disable-component-update",
             "--disable-dev-shm-usage", "--user-data-dir=%s" % profile,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1920,1080", "about:blank"],
            stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.loop = asyncio.new_event_loop()
        self.ws = None  # type: Any
        self._next_id = 0
        try:
            # Port 0: Chromium picks a free port and writes it to DevToolsActivePort.
            active = profile / "DevToolsActivePort"
            until(lambda: self.proc.poll() is not None
                  or (active.exists() and len(active.read_text().splitlines()) >= 2),
                  30, "Chromium's DevTools port")
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            port = int(active.read_text().split()[0])
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port,
                                        timeout=10) as answer:
                pages = [t for t in json.load(answer) if t.get("type") == "page"]
            assert pages, "Chromium has no page target"
            from tornado.websocket import websocket_connect

            async def connect() -> Any:  # Tornado's client (Flower's own dependency)
                return await websocket_connect(pages[0]["webSocketDebuggerUrl"],
                                               max_message_size=64 << 20)
            self.ws = self.loop.run_until_complete(connect())
        except BaseException:
            self.close()
            raise

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> Dict[str, Any]:
        self._next_id += 1
        ident = self._next_id

        async def reply() -> Dict[str, Any]:
            await self.ws.write_message(json.dumps({"id": ident, "method": method,
                                                    "params": params}))
            while True:
                raw = await self.ws.read_message()
                if raw is None:
                    raise AssertionError("DevTools connection closed during %s" % method)
                message = json.loads(raw)
                if message.get("id") == ident:  # events (no id) are not needed here
                    return message

        message = self.loop.run_until_complete(asyncio.wait_for(reply(), timeout))
        if "error" in message:
            raise AssertionError("%s failed: %s" % (method, message["error"]))
        return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError("page script failed: %s" % result["exceptionDetails"])
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        until(lambda: self.evaluate("document.readyState") == "complete"
              and self.evaluate("location.href").startswith(url.split("?")[0]), 30,
              "%s loaded" % url)

    def screenshot(self, path: Path) -> bytes:
        shot = base64.b64decode(self.call("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=True)["data"])
        path.write_bytes(shot)
        return shot

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # Chromium and its helper processes
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.loop.close()
        self._log_handle.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    running = Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        yield running
    finally:
        running.close()


#: The rows the tasks table rendered, each as {column: the text shown in its cell}.
ROWS_JS = """
(() => {
  if (!window.jQuery || !jQuery.fn.dataTable || !jQuery.fn.dataTable.isDataTable('#tasks-table'))
    return null;
  const table = jQuery('#tasks-table').DataTable();
  if (!table.ajax.json()) return null;  // the first XHR of /tasks/datatable not answered yet
  const columns = table.columns().dataSrc().toArray();
  return table.rows({page: 'current'}).indexes().toArray().map(row => {
    const cells = {};
    columns.forEach((name, col) => {
      const node = table.cell(row, col).node();
      cells[name] = node ? node.innerText.trim() : '';
    });
    return cells;
  });
})()
"""


def _ours(rows: List[Dict[str, str]], vm: Vm) -> List[Dict[str, str]]:
    return [r for r in rows if vm.uuid in r.get("args", "")]


def _chain_listed(rows: Optional[List[Dict[str, str]]], vm: Vm) -> bool:
    if not rows:
        return False
    ours = _ours(rows, vm)
    names = sorted(r["name"] for r in ours)
    return (names == sorted(BUILD_STEPS + CREATE_STEPS)
            and all(r["state"] == "SUCCESS" for r in ours))


def test_flower_tasks_page_lists_the_chain_in_a_real_browser(
        stack: Stack, processes: Processes, flower: str, browser: Browser,
        tmp_path: Path) -> None:
    from novahooks.demo import holdings, registered
    vm = with_uuid(Vm("flower-web-1", ((unique_v4(), mac()),)))
    create(vm)
    until(lambda: registered(vm, holdings(vm)), 90, "%s registered" % vm.hostname)
    until(lambda: any(r["kind"] == "build" and r["stage"] == "done"
                      for r in audit_lines(stack, vm.uuid)), 30, "audit of the build")

    # The browser has no way to type a password: it sends the Authorization header
    # an operator's browser would send after the basic-auth prompt.
    user, password = processes.flower_auth
    browser.call("Network.enable")
    browser.call("Network.setExtraHTTPHeaders", headers={
        "Authorization": "Basic " + base64.b64encode(
            ("%s:%s" % (user, password)).encode()).decode()})
    browser.call("Emulation.setDeviceMetricsOverride", width=1920, height=1080,
                 deviceScaleFactor=1, mobile=False)

    def load_tasks_page() -> Optional[List[Dict[str, str]]]:
        browser.navigate(flower + "/tasks")
        (rows,) = until(lambda: (lambda rows: rows is not None and (rows,))(
            browser.evaluate(ROWS_JS)), 30, "the tasks table drawn")
        return rows if _chain_listed(rows, vm) else None

    # Flower's table does not refresh by itself: reload until the last events arrived.
    rows = until(load_tasks_page, 60, "Flower's tasks page listing the chain of %s" % vm.uuid)
    text = browser.evaluate("document.body.innerText")
    html = browser.evaluate("document.documentElement.outerHTML")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot(tmp_path / "flower-tasks.png")
    shutil.copyfile(str(tmp_path / "flower-tasks.png"), str(ARTIFACTS / "flower-tasks.png"))
    (ARTIFACTS / "flower-tasks.txt").write_text(text)
    print("\nFlower tasks page screenshot: %s" % (ARTIFACTS / "flower-tasks.png"))

    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 10000, len(shot)
    assert browser.evaluate("document.title").startswith("Tasks")
    # Every step of the chain is listed by name, succeeded, ran on its own queue's pool,
    # and its arguments name the instance by UUID and hostname.
    ours = _ours(rows, vm)
    for name in BUILD_STEPS:
        assert name in text, name
    for row in ours:
        assert vm.uuid in row["args"] and "'hostname': '%s'" % vm.hostname in row["args"], row
        assert row["state"] == "SUCCESS", row
        assert row["worker"] == "%s@novahooks" % row["name"].split(".")[0], row
    assert vm.uuid in text and vm.hostname in text

    # No configured secret anywhere in what the browser got, rendered or not.
    configured = {"tsig": stack.bind.key_secret, "ldap bind": stack.slapd.bind_password,
                  "ldap admin": stack.slapd.admin_password, "netbox token": stack.netbox.token,
                  "flower": password}
    assert all(len(s) >= 16 for s in configured.values())
    leaks = [what for what, secret in configured.items() if secret in text or secret in html]
    assert leaks == [], "secrets shown on Flower's tasks page: %s" % leaks
