"""The chat page in real headless Chromium, against chatd run as a user runs it.

The server is a subprocess (C{python -m twisted chatd ...}) on free loopback ports, so the
browser (driven by Playwright's sync API) and a raw-socket telnet user act on it like
people would, and a restart is a real restart. Skipped when Chromium or Playwright is
missing, unless the environment variable CI is set: then that is a failure.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"
TIMEOUT = 10.0


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


if (_problem := _missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {_problem}", pytrace=False)
    pytest.skip(f"browser tests skipped: {_problem}", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=TIMEOUT * 1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chatd:
    """chatd in a subprocess, restartable on the same ports and data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.web = _free_port()
        self.line = _free_port()
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


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def chatd(tmp_path):
    server = Chatd(tmp_path)
    server.start()
    yield server
    server.stop()


def open_page(browser, chatd: Chatd, **options) -> Page:
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
    return page.locator("#me").text_content()


def say(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")
    expect(page.locator("#input")).to_have_value("")


def messages(page: Page):
    return page.locator("#messages li.msg")


def message(page: Page, sender: str, text: str):
    return (
        messages(page)
        .filter(has=page.locator(".from", has_text=sender))
        .filter(has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$")))
    )


def rename(page: Page, name: str) -> None:
    say(page, f"/rename {name}")
    expect(page.locator("#me")).to_have_text(name)


def register(page: Page, name: str) -> None:
    page.click("#account-toggle")
    page.fill("#account-name", name)
    page.fill("#account-password", "correct-horse-9")
    page.click("#register")
    expect(page.locator("#me")).to_have_text(f"{name} ✓")


def test_two_pages_chat(browser, chatd):
    alice = open_page(browser, chatd, viewport={"width": 980, "height": 620})
    bob = open_page(browser, chatd, viewport={"width": 390, "height": 760})  # a phone
    rename(alice, "alice")
    rename(bob, "bob")
    expect(alice.locator("#online li")).to_have_text(["alice", "bob"])

    say(alice, "Hi bob! Is the page working on your phone?")
    expect(message(bob, "alice", "Hi bob! Is the page working on your phone?")).to_be_visible()
    say(bob, "Yes, and it reconnects by itself.")
    expect(message(alice, "bob", "Yes, and it reconnects by itself.")).to_be_visible()
    expect(messages(alice)).to_have_count(2)

    say(bob, "/w alice this one is just for you")
    private = alice.locator("#messages li.msg.private")
    expect(private).to_have_count(1)
    expect(private.locator(".from")).to_have_text("bob (private)")
    expect(bob.locator("#messages li.msg.private .from")).to_have_text("to alice")

    say(bob, "/rename")
    expect(alice.locator("#messages li.error")).to_have_count(0)
    expect(bob.locator("#messages li.error")).to_contain_text("usage: /rename")

    # On the phone-sized page everything fits the width and the input is on screen.
    assert bob.evaluate("document.documentElement.scrollWidth <= innerWidth")
    expect(bob.locator("#input")).to_be_in_viewport()
    expect(bob.locator("#online li")).to_have_text(["alice", "bob"])

    say(alice, "Great. See you at 3?")
    expect(message(bob, "alice", "Great. See you at 3?")).to_be_visible()
    alice.fill("#input", "/help")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    alice.screenshot(path=str(SCREENSHOT))


def test_browser_and_telnet_user_chat(browser, chatd):
    page = open_page(browser, chatd)
    me = connected(page)
    telnet = Telnet(chatd.line)
    expect(page.locator("#online li", has_text=telnet.name)).to_be_visible()
    telnet.send("hello from a terminal")
    expect(message(page, telnet.name, "hello from a terminal")).to_be_visible()
    say(page, "hello from a browser")
    telnet.expect(rf"^{re.escape(me)}: hello from a browser$")
    telnet.close()
    expect(page.locator("#online li", has_text=telnet.name)).to_have_count(0)
    # Someone opening the page now sees what was said.
    later = open_page(browser, chatd)
    texts = ["hello from a terminal", "hello from a browser"]
    expect(messages(later).locator(".text")).to_have_text(texts)


def test_reload_keeps_the_login(browser, chatd):
    page = open_page(browser, chatd)
    register(page, "carol")
    page.reload()
    expect(page.locator("#me")).to_have_text("carol ✓")
    expect(page.locator("#logout")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#me")).not_to_have_text("carol ✓")
    page.reload()
    connected(page)
    expect(page.locator("#me")).not_to_have_text(re.compile("carol"))


def test_server_restart_loses_and_doubles_nothing(browser, chatd):
    # Logged in, the page gets the missed messages twice: on /auth and by resuming.
    page = open_page(browser, chatd)
    register(page, "dave")
    telnet = Telnet(chatd.line)
    for n in (1, 2):
        telnet.send(f"before restart {n}")
        expect(message(page, telnet.name, f"before restart {n}")).to_be_visible()
    telnet.close()

    chatd.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "down")
    # Offline until the missed message is sent, so it can only arrive by resuming.
    page.context.set_offline(True)
    chatd.start()
    telnet = Telnet(chatd.line)
    telnet.send("while you were away")
    telnet.send("/list")
    telnet.expect(r"^\* online")
    page.context.set_offline(False)
    connected(page)
    telnet.send("after restart")

    texts = ["before restart 1", "before restart 2", "while you were away", "after restart"]
    expect(messages(page).locator(".text")).to_have_text(texts)
    telnet.close()


def test_html_in_a_message_is_shown_as_text(browser, chatd):
    sender = open_page(browser, chatd)
    reader = open_page(browser, chatd)
    attack = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    say(sender, attack)
    for page in (sender, reader):
        expect(messages(page).locator(".text")).to_have_text([attack])
        assert page.locator("#messages img, #messages script").count() == 0
    say(sender, "/w nobody <b>bold</b>")
    expect(sender.locator("#messages li.error")).to_contain_text("nobody called nobody")
    assert sender.dialogs == [] and reader.dialogs == []
