"""chatd run as a user runs it, for the browser tests and the screenshots.

The server is a subprocess (C{python -m twisted chatd ...}) on free loopback ports, so a
browser and a raw-socket telnet user act on it like people would, and a restart is a real
restart.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chatd:
    """chatd in a subprocess, restartable on the same ports and data directory."""

    def __init__(self, data_dir: Path, irc: bool = False) -> None:
        self.data_dir = data_dir
        self.web = _free_port()
        self.line = _free_port()
        self.irc = _free_port() if irc else None
        self.log = data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web}/"

    def start(self) -> None:
        command = [sys.executable, "-m", "twisted", "chatd", "--data-dir", str(self.data_dir)]
        command += ["--web", f"tcp:{self.web}:interface=127.0.0.1"]
        command += ["--line", f"tcp:{self.line}:interface=127.0.0.1"]
        command += ["--minechat-read", "none", "--minechat-write", "none"]
        command += ["--irc", f"tcp:{self.irc}:interface=127.0.0.1" if self.irc else "none"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"chatd exited:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.web), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.line), timeout=1).close()
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"chatd did not listen:\n{self.log.read_text()}") from e
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(TIMEOUT)


class Telnet:
    """A telnet user on the line door."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("r", encoding="utf-8", newline="\n")
        self.name = self.expect(r"^\* you are (\S+)").group(1)

    def expect(self, pattern: str) -> re.Match[str]:
        """The next line matching C{pattern}; a silent server fails by socket timeout."""
        seen = []
        while line := self.file.readline():
            seen.append(line.rstrip("\r\n"))
            if match := re.search(pattern, seen[-1]):
                return match
        raise AssertionError(f"connection closed before {pattern!r}; got {seen!r}")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("utf-8") + b"\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- a person at the page (Playwright's sync API) ------------------------------------------

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def open_page(browser: Any, chatd: Chatd, **options: Any) -> Page:
    """A new browser profile on the chat page, connected, with its dialogs recorded."""
    page = browser.new_context(**options).new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(chatd.url)
    connected(page)
    return page


def connected(page: Page) -> str:
    expect(page.locator("#status")).to_have_attribute("data-state", "up")
    expect(page.locator("#me")).not_to_be_empty()
    return page.locator("#me").text_content() or ""


def say(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")
    expect(page.locator("#input")).to_have_value("")


def messages(page: Page) -> Any:
    return page.locator("#messages li.msg")


def message(page: Page, sender: str, text: str) -> Any:
    return (
        messages(page)
        .filter(has=page.locator(".from", has_text=sender))
        .filter(has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$")))
    )


def rename(page: Page, name: str) -> None:
    say(page, f"/rename {name}")
    expect(page.locator("#me")).to_have_text(name)


def register(page: Page, name: str, password: str = "correct-horse-9") -> None:
    """Register with the form; the token dialog it opens is closed."""
    page.click("#account-toggle")
    page.fill("#account-name", name)
    page.fill("#account-password", password)
    page.click("#register")
    expect(page.locator("#me")).to_have_text(f"{name} ✓")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.click("#close-token")
