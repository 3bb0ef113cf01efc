"""Refresh the README's screenshots of the page: C{python -m tests.screenshots}.

Runs chatd on free loopback ports with a throwaway data directory, has a short
conversation between a desktop page, a phone page and a telnet user, and writes
docs/screenshot.png (1280x800) and docs/screenshot-phone.png (390x844). The tests never
write there; this is the one command that does. Needs Playwright and Chromium, as the
browser tests do.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    Chatd,
    Telnet,
    message,
    open_page,
    register,
    rename,
    say,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    with tempfile.TemporaryDirectory() as data, sync_playwright() as playwright:
        chatd = Chatd(Path(data))
        chatd.start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            desktop = open_page(browser, chatd, viewport=DESKTOP, color_scheme="light")
            phone = open_page(browser, chatd, viewport=PHONE, color_scheme="light")
            register(desktop, "alice")
            rename(phone, "bob")
            telnet = Telnet(chatd.line)
            telnet.send("/rename tom")
            telnet.expect(r"now known as tom")
            telnet.send("morning! the release notes are up: https://example.org/chatd/releases")
            say(desktop, "Thanks tom, reading them now. The page reconnects by itself now.")
            say(phone, "Works nicely on my phone too: the text gets the whole width.")
            say(phone, "/w alice lunch at 12?")
            say(desktop, "/w bob yes, see you there")
            telnet.send("anyone tried /history yet?")
            expect(message(phone, "tom", "anyone tried /history yet?")).to_be_visible()
            expect(message(desktop, "tom", "anyone tried /history yet?")).to_be_visible()
            desktop.fill("#input", "/help")
            phone.fill("#input", "sounds good")
            for page in (desktop, phone):
                page.mouse.move(0, 0)  # no message highlighted under the pointer
            desktop.screenshot(path=str(DOCS / "screenshot.png"))
            phone.screenshot(path=str(DOCS / "screenshot-phone.png"))
            telnet.close()
        finally:
            browser.close()
            chatd.stop()
    print(f"wrote {DOCS / 'screenshot.png'} and {DOCS / 'screenshot-phone.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
