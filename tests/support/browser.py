"""Headless Chromium (the distribution's package) driven over the DevTools protocol, for UI tests.

Only aiohttp is needed (MLflow depends on it), so no browser bundle is downloaded: Chromium
starts with ``--remote-debugging-port=0``, writes the port it chose to ``DevToolsActivePort`` in
its throw-away profile, and each page is one websocket. Tests wait for text that only rendered
data contains, then screenshot.

    async with Browser() as browser:
        page = await browser.new_page()
        await page.goto(url)
        assert await page.wait_for_text("fold-0")
        await page.screenshot(path)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0", "--remote-allow-origins=*")


def chromium_path() -> str | None:
    """The distribution's Chromium (Debian: ``chromium``), or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: navigate, evaluate JavaScript, wait for rendered text, click, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            future = self._pending.pop(data.get("id"), None)
            if future is not None and not future.done():
                if "error" in data:
                    future.set_exception(RuntimeError(str(data["error"])))
                else:
                    future.set_result(data.get("result", {}))

    async def send(self, method: str, **params: Any) -> dict:
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self.ws.send_str(json.dumps({"id": self._next_id, "method": method, "params": params}))
        return await asyncio.wait_for(future, 60)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"]))
        return result.get("result", {}).get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def wait_for(self, predicate: str, timeout_s: float = 60.0, settle_s: float = 1.0) -> bool:
        """Poll a JavaScript expression until it is truthy, then let rendering settle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if await self.eval(f"!!({predicate})"):
                    await asyncio.sleep(settle_s)
                    return True
            except RuntimeError:
                pass  # the page is between documents
            await asyncio.sleep(0.25)
        return False

    async def wait_for_text(self, text: str, timeout_s: float = 60.0, settle_s: float = 1.0) -> bool:
        return await self.wait_for(f"document.body && document.body.innerText.includes({json.dumps(text)})",
                                   timeout_s, settle_s)

    async def text(self) -> str:
        return await self.eval("document.body ? document.body.innerText : ''")

    async def frame_texts(self) -> list[str]:
        """Text of the page's same-origin and blob iframes (MLflow renders HTML artifacts in one)."""
        return await self.eval("[...document.querySelectorAll('iframe')].map(f => {try {return "
                               "f.contentDocument.body.innerText} catch (e) {return ''}})")

    async def click_text(self, text: str) -> bool:
        """Press and release the mouse on the innermost visible element showing exactly ``text``
        (real input events: some of MLflow's widgets ignore ``element.click()``)."""
        box = await self.eval(f"""(() => {{
            const found = [...document.querySelectorAll('*')].filter(e => e.textContent.trim() === {json.dumps(text)}
                && e.offsetParent !== null).pop();
            if (!found) return null;
            found.scrollIntoView({{block: 'center'}});
            const r = found.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""")
        if not box:
            return False
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        return True

    async def screenshot(self, path: str | os.PathLike) -> Path:
        result = await self.send("Page.captureScreenshot", format="png")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(result["data"]))
        return Path(path)

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


class Browser:
    """A headless Chromium with a fresh profile (fresh localStorage: the UI's first-visit defaults)."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process: subprocess.Popen | None = None
        self.session: aiohttp.ClientSession | None = None
        self.endpoint = ""

    async def __aenter__(self) -> "Browser":
        self.process = subprocess.Popen([self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.executable} did not open its DevTools port")
            await asyncio.sleep(0.1)
        self.endpoint = f"http://127.0.0.1:{port_file.read_text().split()[0]}"
        self.session = aiohttp.ClientSession()
        return self

    async def new_page(self, width: int = 1600, height: int = 1000) -> Page:
        async with self.session.put(f"{self.endpoint}/json/new?about:blank") as response:
            target = await response.json()
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        return page

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.session is not None:
            await self.session.close()
        if self.process is not None:
            _stop_group(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)


def _stop_group(process: subprocess.Popen) -> None:
    """Chromium forks helpers (renderer, GPU, zygote): end its whole process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue
