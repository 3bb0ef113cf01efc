"""The chat page in real headless Chromium, against chatd run as a user runs it.

The server is a subprocess on free loopback ports (L{tests.browser.Chatd}), so the browser
(driven by Playwright's sync API) and a raw-socket telnet user act on it like people would,
and a restart is a real restart. Each page behaviour is tried on a phone (390x844) and a
desktop (1280x800). Skipped when Chromium or Playwright is missing, unless the environment
variable CI is set: then that is a failure.
"""

from __future__ import annotations

import datetime
import os
import re

import pytest

CHROMIUM = "/usr/bin/chromium"


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

from tests.browser import (  # noqa: E402
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    TIMEOUT,
    Chatd,
    Telnet,
    connected,
    message,
    messages,
    open_page,
    register,
    rename,
    say,
)

expect.set_options(timeout=TIMEOUT * 1000)
RETRY_CAP_MS = 1500  # the page's RETRY_CAP_MS in chatd/static/app.js


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


@pytest.fixture(params=[PHONE, DESKTOP], ids=["phone", "desktop"])
def viewport(request):
    return request.param


def notices(page: Page) -> list[str]:
    return page.locator("#messages li.notice").all_text_contents()


def test_two_pages_chat(browser, chatd, viewport, tmp_path):
    alice = open_page(browser, chatd, viewport=viewport)
    bob = open_page(browser, chatd, viewport=viewport)
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

    # Everything fits the width, the input is on screen, nothing is cut.
    for page in (alice, bob):
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        expect(page.locator("#input")).to_be_in_viewport()
        expect(page.locator("#online li")).to_have_text(["alice", "bob"])
        assert page.evaluate(
            "[...document.querySelectorAll('#online li')]"
            ".every((li) => li.scrollWidth <= li.clientWidth)"
        ), "a name in the member list is cut"
        assert page.evaluate(
            """() => {
              const input = document.getElementById('input');
              const style = getComputedStyle(input);
              const ctx = document.createElement('canvas').getContext('2d');
              ctx.font = style.font;
              const room = input.clientWidth - parseFloat(style.paddingLeft)
                - parseFloat(style.paddingRight);
              return ctx.measureText(input.placeholder).width <= room;
            }"""
        ), "the input's placeholder is cut off"
    # A one-line message takes one line, under its sender's name, across the whole width.
    short = message(alice, "bob", "Yes, and it reconnects by itself.")
    text_box = short.locator(".text").bounding_box()
    name_box = short.locator(".from").bounding_box()
    line_height = float(alice.evaluate("parseFloat(getComputedStyle(document.body).fontSize)"))
    assert text_box["height"] < 2 * line_height
    assert abs(text_box["x"] - name_box["x"]) < 2 and text_box["y"] >= name_box["y"] + 1
    list_box = alice.locator("#messages").bounding_box()
    assert list_box["width"] > 0.7 * viewport["width"]
    say(alice, "word " * 300)
    long_text = messages(bob).last.locator(".text").bounding_box()
    assert long_text["width"] > 0.6 * viewport["width"]

    say(alice, "Great. See you at 3?")
    expect(message(bob, "alice", "Great. See you at 3?")).to_be_visible()
    alice.screenshot(path=str(tmp_path / "alice.png"))


def test_browser_and_telnet_user_chat(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
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
    later = open_page(browser, chatd, viewport=viewport)
    texts = ["hello from a terminal", "hello from a browser"]
    expect(messages(later).locator(".text")).to_have_text(texts)


def test_register_with_a_space_in_the_name_is_refused_in_the_form(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    guest = connected(page)
    page.click("#account-toggle")
    page.fill("#account-name", "Mary Jane")
    page.fill("#account-password", "correct-horse-9")
    page.click("#register")
    error = page.locator("#account-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("a name has letters, digits")
    expect(page.locator("#me")).to_have_text(guest)
    expect(page.locator("#account-password")).to_have_value("correct-horse-9")  # not lost
    # No account "Mary" with the password "Jane correct-horse-9" was made.
    page.fill("#account-name", "Mary")
    page.fill("#account-password", "Jane correct-horse-9")
    page.click("#login")
    expect(error).to_have_text("wrong name or password")

    # Without the space it works, and the token is shown in a dialog, not in the stream.
    page.fill("#account-name", "MaryJane")
    page.fill("#account-password", "correct-horse-9")
    page.click("#register")
    expect(page.locator("#me")).to_have_text("MaryJane ✓")
    expect(page.locator("#account")).to_be_hidden()
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    token = page.evaluate("localStorage.getItem('chatd.token')")
    assert token and re.fullmatch(r"[0-9a-f-]{20,}", token)
    expect(page.locator("#token")).to_have_value(token)
    assert token not in page.locator("#messages").inner_text()
    page.click("#copy-token")
    expect(page.locator("#copied")).not_to_be_empty()
    page.click("#close-token")
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages li.notice").last).to_have_text(
        "account MaryJane created; you are logged in"
    )


def test_reload_keeps_the_login(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    register(page, "carol")
    page.reload()
    expect(page.locator("#me")).to_have_text("carol ✓")
    expect(page.locator("#logout")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#me")).not_to_have_text("carol ✓")
    page.reload()
    connected(page)
    expect(page.locator("#me")).not_to_have_text(re.compile("carol"))


def test_a_reload_is_not_seen_by_the_others(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    register(page, "erin")
    watcher = open_page(browser, chatd, viewport=viewport)
    expect(watcher.locator("#online li", has_text="erin")).to_be_visible()
    before = notices(watcher)

    identities = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived",
            lambda frame: identities.append(frame) if '"identity"' in str(frame) else None,
        ),
    )
    page.reload()
    expect(page.locator("#me")).to_have_text("erin ✓")
    say(page, "back after a reload")
    expect(message(watcher, "erin", "back after a reload")).to_be_visible()
    # The reloaded page was never a guest, and the watcher heard of no leave or join.
    assert identities and all('"account": "erin"' in str(f) for f in identities), identities
    expect(page.locator("#messages li.notice", has_text="Welcome back, erin!")).to_have_count(1)
    expect(page.locator("#messages li.notice", has_text="Welcome to chatd")).to_have_count(0)
    assert notices(watcher) == before
    expect(watcher.locator("#online li", has_text="erin")).to_be_visible()


def test_server_restart_loses_and_doubles_nothing(browser, chatd, viewport):
    # Logged in, the page gets the missed messages twice: on login and by resuming.
    page = open_page(browser, chatd, viewport=viewport)
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
    expect(page.locator("#me")).to_have_text("dave ✓")
    telnet.send("after restart")

    texts = ["before restart 1", "before restart 2", "while you were away", "after restart"]
    expect(messages(page).locator(".text")).to_have_text(texts)
    telnet.close()


def test_offline_the_page_counts_down_and_retries_often(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    register(page, "fay")
    online = page.locator(".online")
    assert float(online.evaluate("(n) => getComputedStyle(n).opacity")) == 1

    chatd.stop()
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "down")
    expect(status).to_have_text(re.compile(r"^offline, retrying in \d+\.\d s$"))
    expect(page.locator("#retry")).to_be_visible()
    assert float(online.evaluate("(n) => getComputedStyle(n).opacity")) < 1  # greyed
    # However often it failed, the next try is never further off than the cap.
    # (An attribute expectation, not wait_for_function: the page's CSP forbids eval.)
    expect(status).to_have_attribute("data-attempts", re.compile(r"^([6-9]|\d\d+)$"))
    assert 0 < int(status.get_attribute("data-retry-ms")) <= RETRY_CAP_MS

    chatd.start()
    connected(page)
    expect(page.locator("#me")).to_have_text("fay ✓")
    expect(page.locator("#retry")).to_be_hidden()
    assert float(online.evaluate("(n) => getComputedStyle(n).opacity")) == 1


def test_retry_now_reconnects_without_waiting(browser, chatd, viewport):
    # The page's timers are frozen: only the button can bring it back.
    page = browser.new_context(viewport=viewport).new_page()
    page.clock.install()
    page.goto(chatd.url)
    connected(page)
    page.clock.pause_at(datetime.datetime.now() + datetime.timedelta(seconds=1))
    chatd.stop()
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "down")
    # The countdown counts down as time passes.
    shown = status.text_content()
    page.clock.run_for(100)
    expect(status).not_to_have_text(shown)
    expect(status).to_have_text(re.compile(r"^offline, retrying in \d+\.\d s$"))
    chatd.start()
    expect(status).to_have_attribute("data-state", "down")
    page.click("#retry")
    connected(page)


def test_unread_messages_are_counted_in_the_title(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    telnet = Telnet(chatd.line)
    expect(page).to_have_title("chatd")
    page.evaluate("window.dispatchEvent(new Event('blur'))")  # the person looks elsewhere
    telnet.send("one")
    telnet.send("two")
    expect(page).to_have_title("(2) chatd")
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    expect(page).to_have_title("chatd")
    say(page, "my own message is not unread")
    telnet.send("three")
    expect(message(page, telnet.name, "three")).to_be_visible()
    expect(page).to_have_title("chatd")
    telnet.close()


def test_new_messages_while_scrolled_up_are_marked(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    telnet = Telnet(chatd.line)
    for n in range(8):
        telnet.send(f"filler {n} " + "words to fill the screen " * 30)
    expect(messages(page)).to_have_count(8)
    jump = page.locator("#jump")
    expect(jump).to_be_hidden()
    page.locator("#messages").evaluate("(list) => { list.scrollTop = 0; }")
    telnet.send("new one")
    telnet.send("new two")
    expect(jump).to_have_text("↓ 2 new messages")
    expect(message(page, telnet.name, "new two")).not_to_be_in_viewport()
    jump.click()
    expect(message(page, telnet.name, "new two")).to_be_in_viewport()
    expect(jump).to_be_hidden()
    # At the bottom, new messages show without a marker.
    telnet.send("new three")
    expect(message(page, telnet.name, "new three")).to_be_in_viewport()
    expect(jump).to_be_hidden()
    telnet.close()


def test_links_are_clickable_and_only_http(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    telnet = Telnet(chatd.line)
    text = (
        "docs at https://example.org/a?b=1&c=2. not javascript:alert(1) "
        "nor <a href=javascript:alert(2)>x</a> (see http://example.com/x_(y))"
    )
    telnet.send(text)
    shown = message(page, telnet.name, text)
    expect(shown).to_be_visible()
    links = shown.locator("a")
    expect(links).to_have_count(2)
    expect(links).to_have_text(["https://example.org/a?b=1&c=2", "http://example.com/x_(y)"])
    for n in range(2):
        expect(links.nth(n)).to_have_attribute("target", "_blank")
        expect(links.nth(n)).to_have_attribute("rel", "noopener noreferrer")
    expect(links.first).to_have_attribute("href", "https://example.org/a?b=1&c=2")
    assert page.locator("#messages a[href^='javascript' i]").count() == 0
    assert page.dialogs == []
    telnet.close()


def test_the_page_has_a_favicon(browser, chatd, viewport):
    page = open_page(browser, chatd, viewport=viewport)
    href = page.locator("link[rel=icon]").evaluate("(link) => link.href")
    answer = page.request.get(href)
    assert answer.status == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.text().lstrip().startswith("<svg")


def test_html_in_a_message_is_shown_as_text(browser, chatd, viewport):
    sender = open_page(browser, chatd, viewport=viewport)
    reader = open_page(browser, chatd, viewport=viewport)
    attack = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    say(sender, attack)
    for page in (sender, reader):
        expect(messages(page).locator(".text")).to_have_text([attack])
        assert page.locator("#messages img, #messages script").count() == 0
    say(sender, "/w nobody <b>bold</b>")
    expect(sender.locator("#messages li.error")).to_contain_text("nobody called nobody")
    assert sender.dialogs == [] and reader.dialogs == []


def test_two_rooms_count_unread_and_switching_shows_the_rooms_lines(
    browser, chatd, viewport, tmp_path
):
    alice = open_page(browser, chatd, viewport=viewport)
    rename(alice, "alice")
    telnet = Telnet(chatd.line)
    telnet.send("/join #dev")
    telnet.expect(r"^\* you joined #dev")
    telnet.send("said in dev before alice came")
    # Joining with the form: the room is listed, shown, and its recent lines come along.
    alice.fill("#join-name", "#dev")
    alice.press("#join-name", "Enter")
    current = alice.locator("#rooms li.current button")
    expect(current).to_have_text("#dev")
    expect(message(alice, telnet.name, "said in dev before alice came")).to_be_visible()
    expect(alice.locator("#online li")).to_have_text(
        sorted([telnet.name, "alice"], key=str.casefold)
    )
    say(alice, "hi dev")
    telnet.expect(r"^alice: hi dev$")

    # A line in the room not shown counts as unread there, and is not on screen.
    telnet.send("/join #lobby")
    telnet.expect(r"^\* you are now talking in #lobby$")
    telnet.send("lobby news")
    telnet.send("more lobby news")
    lobby = alice.locator("#rooms button", has_text="#lobby")
    expect(lobby.locator(".unread")).to_have_text("2")
    expect(message(alice, telnet.name, "lobby news")).to_be_hidden()
    alice.screenshot(path=str(tmp_path / "unread.png"))

    # Switching shows that room's lines (and not the other's), and clears its count.
    lobby.click()
    expect(alice.locator("#rooms li.current button")).to_have_text("#lobby")
    expect(lobby.locator(".unread")).to_have_count(0)
    expect(message(alice, telnet.name, "lobby news")).to_be_visible()
    expect(message(alice, telnet.name, "said in dev before alice came")).to_be_hidden()
    say(alice, "back in the lobby")
    telnet.expect(r"^alice: back in the lobby$")
    expect(alice.locator("#part")).to_be_visible()  # she is in #dev too

    # Leaving a room takes it off the list; the last one cannot be left.
    alice.locator("#rooms button", has_text="#dev").click()
    alice.click("#part")
    expect(alice.locator("#rooms button")).to_have_text(["#lobby"])
    expect(alice.locator("#part")).to_be_hidden()
    telnet.close()
