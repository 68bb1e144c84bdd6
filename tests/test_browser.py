"""reports/report.html and reports/compare.html in a real browser: headless Chromium, driven over its DevTools
pipe (`--remote-debugging-pipe`, no extra package), on the session's tiny reference run. What a reader
gets: the answer (the test accuracy and its change) on the first screen of 1400×900, nothing requested
but the page itself, every image inline and decoded.

Without Chromium the tests skip, naming what to install; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import sh
from tests.servers import require
from trafficsigns.reporting.runs import number

pytestmark = pytest.mark.slow

SCREEN = {"width": 1400, "height": 900}
INSTALL_CHROMIUM = "apt-get install chromium (Debian's; .ci/run installs it)"
# What the page shows on its first screen, the images it holds and the external URLs it names.
LAYOUT = """JSON.stringify({
  height: document.documentElement.scrollHeight,
  firstScreen: [...document.querySelectorAll("h1, h2, p, th, td")]
    .filter(e => { const r = e.getBoundingClientRect(); return r.height > 0 && r.top >= 0 && r.bottom <= innerHeight; })
    .map(e => e.innerText),
  images: [...document.images].map(i => ({src: i.getAttribute("src").slice(0, 22), width: i.naturalWidth})),
  external: [...document.querySelectorAll("[src], [href]")]
    .map(e => e.getAttribute("src") || e.getAttribute("href")).filter(u => /^([a-z]+:)?\\/\\//i.test(u)),
})"""


class Chromium:
    """One headless Chromium; `render` opens a page in a 1400×900 tab and reports what it did."""

    def __init__(self, profile: Path):
        binary = shutil.which("chromium")
        require([] if binary else ["chromium"], INSTALL_CHROMIUM)
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def pipe_fds():  # Chromium reads commands on fd 3 and answers on fd 4
            read, write = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser))
            os.dup2(read, 3), os.dup2(write, 4)

        self.log = profile / "chromium.log"
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
            + ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
            + [f"--user-data-dir={profile}", "--window-size=1400,900", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            close_fds=False,
            preexec_fn=pipe_fds,
        )
        os.close(to_browser), os.close(from_browser)
        self._buffer, self._id, self.events = b"", 0, []

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))[0]:
                pytest.fail(f"Chromium did not answer in time:\n{self.log.read_text()[-2000:]}")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                pytest.fail(f"Chromium closed its DevTools pipe:\n{self.log.read_text()[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=60.0) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        os.write(self._out, json.dumps(message | ({"sessionId": session} if session else {})).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while (answer := self._receive(deadline)).get("id") != self._id:
            self.events.append(answer)
        assert "error" not in answer, f"{method}: {answer['error']}"
        return answer.get("result", {})

    def render(self, page: Path, screenshot: Path) -> dict:
        """Open `page`, wait for its load event, and return its layout facts and the URLs it requested."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {**SCREEN, "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Network.enable", {}, session)
        self.send("Page.enable", {}, session)
        self.events = []
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._receive(deadline))
        requested = [
            e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"
        ]
        layout = self.send("Runtime.evaluate", {"expression": LAYOUT, "returnByValue": True}, session)
        screenshot.write_bytes(
            base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session)["data"])
        )
        return {**json.loads(layout["result"]["value"]), "requested": requested}

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            os.close(self._in), os.close(self._out)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    browser = Chromium(tmp_path_factory.mktemp("chromium"))
    yield browser
    browser.close()


def offline_and_inline(facts: dict, page: Path) -> None:
    assert facts["requested"][0] == page.resolve().as_uri()
    assert all(url.startswith("data:") for url in facts["requested"][1:]), facts["requested"]
    assert facts["external"] == [], "the page names external resources"
    assert facts["images"] and all(i["src"] == "data:image/png;base64," and i["width"] > 0 for i in facts["images"])


def test_the_report_answers_on_its_first_screen(tiny_pipeline_repo, chromium, tmp_path):
    page = tiny_pipeline_repo / "reports" / "report.html"
    facts = chromium.render(page, tmp_path / "report.png")
    print(f"report.html: {facts['height']} px tall; first screen in {tmp_path / 'report.png'}")
    offline_and_inline(facts, page)
    test = json.loads((tiny_pipeline_repo / "metrics" / "evaluate.json").read_text())["test"]
    first = facts["firstScreen"]
    assert "Test results" in first and "Provenance" in first
    assert number(test["accuracy"], True) in first and number(test["macro_f1"], True) in first
    assert "change" in first and "What the network sees" not in first


def test_the_comparison_leads_with_its_baseline(tiny_pipeline_repo, chromium, tmp_path):
    """An experiment saved from the reference run (`dvc exp save`: no training), compared with its baseline."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline_repo, repo, symlinks=True)
    sh(repo, "git", "config", "user.name", "t")
    sh(repo, "git", "config", "user.email", "t@t")
    sh(repo, "dvc", "exp", "save", "-n", "tiny-again")
    sh(repo, "python", "-m", "trafficsigns", "compare")
    page = repo / "reports" / "compare.html"
    facts = chromium.render(page, tmp_path / "compare.png")
    print(f"compare.html: {facts['height']} px tall; first screen in {tmp_path / 'compare.png'}")
    offline_and_inline(facts, page)
    accuracy = number(json.loads((repo / "metrics" / "evaluate.json").read_text())["test"]["accuracy"], True)
    first = facts["firstScreen"]
    assert any(text.startswith("baseline: ") for text in first) and "tiny-again" in first
    assert first.count(accuracy) == 2 and "+0.00 pp" in first
    assert not {"None", "False", "nan"} & {word for text in first for word in text.split()}
