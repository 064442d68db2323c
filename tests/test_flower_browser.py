"""Flower's tasks page, as an operator sees it in a real browser.

Flower runs with its basic-auth credentials next to the session's worker pools;
a full build chain runs for a fresh VM through Nova's hooks; then headless
Chromium (Debian's ``chromium-headless-shell``, driven over the DevTools
protocol through Tornado's websocket client) loads ``/tasks`` and the test reads
what the page rendered:

* the tasks table lists every step of the chain, succeeded, on its queue's pool;
* typing the instance UUID into the search box finds exactly this VM's tasks;
* each task's page shows its arguments, naming the instance by UUID and hostname
  (Flower 2.2's default table columns have no arguments column: they are on the
  task's own page);
* no configured secret appears on any of these pages, rendered or in the HTML.

Screenshots and page texts are kept in ``artifacts/``: ``flower-tasks.png`` (the
list), ``flower-tasks-search.png`` and ``flower-task-ipam-reserve.png``.
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, with_uuid
from tests.conftest import ROOT, mac, unique_v4
from tests.helpers import audit_lines, until

BUILD_STEPS = ("dns.register", "ldap.register", "ipam.reserve", "inventory.register",
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


pytestmark = pytest.mark.usefixtures("hook_outbox")


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


#: What the tasks table shows once the answer to its latest request is drawn:
#: the search it was drawn for, and each row as {column: the text in its cell,
#: "link": where the task's UUID links to}; null while a request is in flight.
TABLE_JS = """
(() => {
  if (!window.jQuery || !jQuery.fn.dataTable || !jQuery.fn.dataTable.isDataTable('#tasks-table'))
    return null;
  const table = jQuery('#tasks-table').DataTable();
  const sent = table.ajax.params(), answer = table.ajax.json();
  if (!sent || !answer || answer.draw !== sent.draw) return null;
  const columns = table.columns().dataSrc().toArray();
  const rows = table.rows({page: 'current'}).indexes().toArray().map(row => {
    const cells = {};
    columns.forEach((name, col) => {
      const node = table.cell(row, col).node();
      // the worker's name is drawn in two spans (so it can be shortened): join them
      const text = !node ? '' : name === 'worker' ? node.textContent : node.innerText;
      cells[name] = text.replace(/\\s+/g, ' ').trim();
      const link = node && name === 'uuid' && node.querySelector('a');
      if (link) cells.link = link.href;
    });
    return cells;
  });
  return {search: sent.search.value, total: answer.recordsTotal, rows: rows};
})()
"""


class TasksPage(object):
    """Flower's /tasks in the browser, read the way the operator reads it."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        self.url = url

    def table(self, search: str = "") -> Dict[str, Any]:
        return until(lambda: (lambda shown: shown is not None and shown["search"] == search
                              and shown)(self.browser.evaluate(TABLE_JS)), 30,
                     "the tasks table drawn for %r" % search)

    def load(self) -> Dict[str, Any]:
        self.browser.navigate(self.url + "/tasks")
        return self.table()

    def search(self, text: str) -> Dict[str, Any]:
        """Click into the search box and type, as a person does."""
        self.browser.evaluate("document.querySelector('#tasks-table_filter input').focus()")
        self.browser.call("Input.insertText", text=text)
        return self.table(text)


def _names(rows: List[Dict[str, str]]) -> List[str]:
    return sorted(row["name"] for row in rows)


def test_flower_tasks_page_lists_the_chain_in_a_real_browser(
        stack: Stack, processes: Processes, flower: str, browser: Browser,
        tmp_path: Path) -> None:
    from tests.demo import holdings, registered
    vm = with_uuid(Vm("flower-web-1", ((unique_v4(), mac()),)))
    create(vm)
    until(lambda: registered(vm, holdings(vm)), 90, "%s registered" % vm.hostname)
    until(lambda: any(r["kind"] == "build" and r["stage"] == "done"
                      for r in audit_lines(stack.audit_path, vm.uuid)), 30, "audit of the build")
    expected = sorted(BUILD_STEPS + CREATE_STEPS)

    # Headless Chromium cannot answer the basic-auth prompt: it sends the Authorization
    # header an operator's browser sends once the password was typed.
    user, password = processes.flower_auth
    browser.call("Network.enable")
    browser.call("Network.setExtraHTTPHeaders", headers={
        "Authorization": "Basic " + base64.b64encode(
            ("%s:%s" % (user, password)).encode()).decode()})
    page = TasksPage(browser, flower)
    ARTIFACTS.mkdir(exist_ok=True)
    pages = {}  # type: Dict[str, str]

    def keep(name: str) -> bytes:
        """Screenshot and text of what the browser shows now, in artifacts/."""
        shot = browser.screenshot(tmp_path / (name + ".png"))
        shutil.copyfile(str(tmp_path / (name + ".png")), str(ARTIFACTS / (name + ".png")))
        pages[name] = browser.evaluate("document.body.innerText")
        (ARTIFACTS / (name + ".txt")).write_text(pages[name])
        pages[name + " (html)"] = browser.evaluate("document.documentElement.outerHTML")
        print("\nkept %s" % (ARTIFACTS / (name + ".png")))
        return shot

    # 1. The tasks page lists every step of the chain. Flower's table does not refresh
    #    by itself, so reload until the last task event has arrived.
    shown = {}  # type: Dict[str, Any]

    def chain_listed() -> bool:
        shown.update(page.load())
        names = [r["name"] for r in shown["rows"]]
        return (all(names.count(n) >= expected.count(n) for n in set(expected))
                and all(r["state"] == "SUCCESS" for r in shown["rows"]))
    try:
        until(chain_listed, 60, "Flower's tasks page listing the chain's tasks")
    finally:
        shot = keep("flower-tasks")
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 10000, len(shot)
    assert browser.evaluate("document.title").startswith("Tasks")
    for name in BUILD_STEPS:
        assert name in pages["flower-tasks"], name
    for row in shown["rows"]:
        assert row["worker"] == "%s@novahooks" % row["name"].split(".")[0], row

    # 2. Typing the instance UUID into the search box finds exactly this VM's tasks:
    #    the UUID is in every task's arguments.
    found = page.search(vm.uuid)
    assert _names(found["rows"]) == expected, found
    assert all(r["state"] == "SUCCESS" for r in found["rows"]), found
    keep("flower-tasks-search")

    # 3. Each task's page shows its arguments: readable, naming the instance by UUID
    #    and hostname.
    for row in found["rows"]:
        browser.navigate(row["link"])
        args = browser.evaluate(
            "Array.from(document.querySelectorAll('dt')).filter(dt => "
            "dt.innerText.trim() === 'Arguments').map(dt => "
            "dt.nextElementSibling.innerText).join('\\n')")
        assert "'uuid': '%s'" % vm.uuid in args, (row, args)
        assert "'hostname': '%s'" % vm.hostname in args, (row, args)
        assert "'kind': " in args, (row, args)
        # (Celery's argsrepr is a depth-limited saferepr: the addresses list shows as
        # [{...}]; the addresses are in the message and in the workers' logs.)
        if row["name"] == "ipam.reserve":
            keep("flower-task-ipam-reserve")
        else:
            pages[row["link"]] = browser.evaluate("document.body.innerText")
            pages[row["link"] + " (html)"] = browser.evaluate(
                "document.documentElement.outerHTML")
    assert "flower-task-ipam-reserve" in pages

    # 4. No configured secret anywhere in what the browser got, rendered or not.
    configured = {"tsig": stack.bind.key_secret, "ldap bind": stack.slapd.bind_password,
                  "ldap admin": stack.slapd.admin_password, "netbox token": stack.netbox.token,
                  "flower": password}
    assert all(len(s) >= 16 for s in configured.values())
    leaks = ["%s on %s" % (what, where) for what, secret in configured.items()
             for where, content in pages.items() if secret in content]
    assert leaks == [], "secrets shown by Flower: %s" % leaks
