"""Refresh the README's IRC screenshot: C{python -m tests.irc_screenshot}.

Runs chatd on free loopback ports, has irssi (in tmux) talk with the chat page (Chromium),
and writes docs/irc.png: irssi's screen as C{tmux capture-pane} shows it, next to the page.
The tests never write there; this is the one command that does. Needs irssi, tmux,
Playwright and Chromium.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, Chatd, message, open_page, register, say

DOCS = Path(__file__).resolve().parent.parent / "docs"


class Tmux:
    def __init__(self, directory: str) -> None:
        self.env = {"PATH": os.environ["PATH"], "TERM": "xterm", "TMUX_TMPDIR": directory}

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-f", "/dev/null", *args], env=self.env, capture_output=True, text=True
        )
        return done.stdout

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "irssi", "-l", text)
        self.run("send-keys", "-t", "irssi", "Enter")

    def shows(self, pattern: str) -> str:
        deadline = time.monotonic() + 20
        while True:
            screen = self.run("capture-pane", "-p", "-t", "irssi")
            if re.search(pattern, screen, re.M):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"irssi never showed {pattern!r}:\n{screen}")
            time.sleep(0.2)


def main() -> None:
    with tempfile.TemporaryDirectory() as data, sync_playwright() as playwright:
        chatd = Chatd(Path(data), irc=True)
        chatd.start()
        tmux = Tmux(data)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, chatd, viewport={"width": 760, "height": 440})
            register(page, "alice")
            home = Path(data) / "irssi"
            home.mkdir()
            irssi = f"{shutil.which('irssi')} --home={home} -n bob -c 127.0.0.1 -p {chatd.irc}"
            tmux.run("new-session", "-d", "-s", "irssi", "-x", "78", "-y", "16", irssi)
            tmux.shows("Welcome to chatd, bob")
            tmux.type("/window goto #lobby")
            tmux.shows("has joined #lobby")
            say(page, "hi bob! you are on IRC?")
            tmux.shows("hi bob! you are on IRC")
            answer = "yes, irssi in a terminal: same chat, #lobby"
            tmux.type(answer)
            expect(message(page, "bob", answer)).to_be_visible(timeout=20000)
            say(page, "/w bob and whispers are IRC private messages")
            tmux.shows(r"Act: .*3")
            tmux.type("/me waves")
            expect(message(page, "bob", "* waves")).to_be_visible(timeout=20000)
            time.sleep(0.5)
            screen = tmux.run("capture-pane", "-p", "-t", "irssi")
            page.mouse.move(0, 0)
            shot = Path(data) / "page.png"
            page.screenshot(path=str(shot))
            picture = base64.b64encode(shot.read_bytes()).decode()
            both = browser.new_page(viewport={"width": 1440, "height": 460})
            both.set_content(
                "<body style='margin:0;display:flex;gap:10px;background:#222;padding:10px'>"
                "<pre style='margin:0;padding:8px;background:#000;color:#ddd;"
                "font:13px/1.35 DejaVu Sans Mono,monospace;width:650px'>"
                f"{html.escape(screen.rstrip())}</pre>"
                f"<img src='data:image/png;base64,{picture}' width=760 height=440>"
                "</body>"
            )
            both.screenshot(path=str(DOCS / "irc.png"))
            print(screen)
        finally:
            tmux.run("kill-server")
            browser.close()
            chatd.stop()
    print(f"wrote {DOCS / 'irc.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
