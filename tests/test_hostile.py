"""Hostile input against the real doors: huge messages, huge histories, huge command
arguments, a full disk, deeply nested JSON, look-alike text (issue "hostile input").

Each test starts a real server on free ports and talks to it as the attacker and as the
people the attack used to hurt.
"""

from __future__ import annotations

import errno
import json
from types import SimpleNamespace
from typing import Any

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from chatd import text
from chatd.config import Config
from chatd.doors.minechat import LINE_JOINER, MinechatWriteDoor
from chatd.events import Message
from tests.support import TIMEOUT, line_client, pause, raw_client, ws_client

ASK_NICKNAME = b"Enter preferred nickname below:\n"
WELCOME = b"Welcome to chat! Post your message below. End it with an empty line.\n"
SENT = b"Message send. Write more, end message with an empty line.\n"
OFF = {"lines_per_second": 0, "messages_per_hour": 0, "new_connections_per_minute": 0}


async def until(condition: Any, what: str) -> None:
    for _ in range(int(TIMEOUT / 0.02)):
        if condition():
            return
        await pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def fill_history(server: Any, count: int, size: int) -> list[str]:
    """C{count} public messages of C{size} bytes straight into the store, as a server with
    a higher limit (or another node) could have left them."""
    room = server.room
    now = room.clock.seconds()
    texts = [f"{i:04d}" + "x" * (size - 4) for i in range(count)]
    first = room.sequence.newest_shown + 1
    for i, body in enumerate(texts):
        await room.store.add_message(Message(first + i, now, "old", body))
    room.sequence.shown_up_to(first + count - 1)
    room.sequence.newest_shown = room.sequence.given = first + count - 1
    return texts


# -- case 1: one minechat message of any size -----------------------------------------------


async def minechat_writer(server: Any, nickname: str) -> Any:
    client = await raw_client(server.ports["minechat_write"])
    await client.lines()
    client.send(b"\n")
    assert await client.lines() == ASK_NICKNAME
    client.send(nickname.encode() + b"\n")
    await client.lines(2)  # the account line, the welcome
    return client


@pytest_twisted.ensureDeferred
async def test_a_huge_minechat_message_is_not_sent_and_readers_stay(serve, log):
    server = await serve(doors=("line", "minechat_write"), **OFF)
    reader = await line_client(server.ports["line"])
    writer = await minechat_writer(server, "spammer")
    line = b"y" * 4000 + b"\n"
    writer.send(line * 300 + b"\n")  # 1.2 MB as one message: over every reader's cap
    assert await writer.lines() == SENT  # the client is answered as usual, not hung
    writer.send(b"small and fine\n\n")
    assert await writer.lines() == SENT
    await reader.expect(r"^spammer: small and fine$")
    assert not any("yyyy" in seen for seen in reader.lines)
    assert not reader.closed.called
    kept = await server.room.history_after(0, 10)
    assert [m.text for m in kept] == ["small and fine"]
    assert any("minechat writer" in t and "over the limit of 4096" in t for t in log.texts())


class _Room:
    def __init__(self, limit: int) -> None:
        self.config = Config(max_message_bytes=limit, max_line_bytes=64)
        self.received: list[str] = []

    def connect(self, door: Any) -> Any:
        return SimpleNamespace(closing=False)

    def switch(self, session: Any, name: str) -> None:
        """The writer posts to the default room, which it is in."""

    def receive(self, session: Any, line: str) -> None:
        self.received.append(line)


def minechat_door(limit: int) -> tuple[MinechatWriteDoor, _Room]:
    room = _Room(limit)
    door = MinechatWriteDoor()
    door.factory = SimpleNamespace(room=room)  # type: ignore[assignment]
    door.makeConnection(StringTransport())
    door._step = door._chat  # logged in
    return door, room


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
            max_size=70,
        )
    ),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=50),
)
def test_minechat_lines_join_into_one_message_within_the_limit(lines, limit, cut):
    door, room = minechat_door(limit)
    data = b"".join(line.encode() + b"\n" for line in lines) + b"\n"
    for start in range(0, len(data), cut):  # any split of the stream into packets
        door.dataReceived(data[start : start + cut])
    kept = [line for line in lines if line.strip() and len(line.encode()) <= 64]
    joined = LINE_JOINER.join(kept)
    # Blank lines end a message early; only the last message is checked whole here.
    if all(line.strip() for line in lines) and kept == [ln for ln in lines if ln.strip()]:
        if kept and text.utf8_size(joined) <= limit:
            assert room.received == [joined]
        else:
            assert room.received == []
    assert all(text.utf8_size(m) <= limit for m in room.received)
    assert door._message == [] and door._size == 0
    sent = door.transport.value()  # type: ignore[attr-defined]
    assert sent.count(SENT) == sum(1 for ln in lines if not ln.strip()) + 1


def test_a_long_minechat_message_never_holds_more_than_the_limit():
    door, room = minechat_door(100)
    for _ in range(1000):
        door.dataReceived(b"z" * 60 + b"\n")
        assert sum(len(m) for m in door._message) <= 100
    door.dataReceived(b"\n")
    assert room.received == []


# -- case 2: history, catch-up and resume in pieces -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_resume_of_200_big_messages_arrives_whole_to_a_slow_page(serve, log):
    server = await serve(doors=("web",), max_message_bytes=65536, max_ws_message_bytes=2**20, **OFF)
    texts = await fill_history(server, 200, 65536)
    page = await ws_client(server.ports["web"], protocols=["chatd.json"])
    await page.expect('"type": "presence"')
    page.transport.pauseProducing()  # a slow page: it reads nothing for a while
    page.send(json.dumps({"type": "resume", "after": 0}))
    page.send(json.dumps({"type": "resume", "after": 0}))  # asked twice, as on a reconnect
    await pause(0.5)
    page.transport.resumeProducing()
    got: list[str] = []

    def history() -> list[str]:
        got.clear()
        for frame in page.lines:
            event = json.loads(frame)
            if event["type"] == "history":
                got.extend(m["text"] for m in event["messages"])
        return got

    await until(lambda: len(history()) == 400, "two whole resumes")
    assert got == texts + texts
    frames = [f for f in page.lines if '"history"' in f]
    assert len(frames) > 2 and all(len(f) < 200_000 for f in frames)
    before = len(page.lines)
    page.send(json.dumps({"text": "/list"}))
    await until(
        lambda: '"type": "presence"' in page.lines[-1] and len(page.lines) > before,
        "an answer to /list",
    )
    assert not page.closed.called
    assert not any("stopped reading" in t for t in log.texts())


@pytest_twisted.ensureDeferred
async def test_stored_messages_over_the_limit_are_cut_on_output_with_a_note(serve):
    server = await serve(doors=("line", "web"), **OFF)
    await fill_history(server, 3, 65536)
    page = await ws_client(server.ports["web"], protocols=["chatd.json"])
    page.send(json.dumps({"type": "resume", "after": 0}))
    frame = json.loads(await page.expect('"type": "history"'))
    assert [m["text"] for m in frame["messages"]] == [
        f"{i:04d}" + "x" * 4092 + " \u2026 [cut: 65536 bytes]" for i in range(3)
    ]
    telnet = await line_client(server.ports["line"])
    telnet.send("/history 3")
    await telnet.expect(r"^\* recent messages \(3\):$|^\* .*\(3\):$")
    for i in range(3):
        line = await telnet.expect(rf"^\[\d\d:\d\d:\d\d\] old: {i:04d}x+ ")
        assert line.endswith("x \u2026 [cut: 65536 bytes]") and len(line) < 4200


@pytest_twisted.ensureDeferred
async def test_history_on_the_line_door_arrives_whole_to_a_slow_reader(serve, log):
    server = await serve(doors=("line",), max_output_bytes=65536, **OFF)
    await fill_history(server, 200, 65536)
    slow = await line_client(server.ports["line"])
    talker = await line_client(server.ports["line"])
    slow.transport.pauseProducing()
    slow.send("/history 200")
    slow.send("/history 200")
    await pause(0.5)
    talker.send("said while the history was sent")
    await pause(0.2)
    slow.transport.resumeProducing()
    await slow.expect(r"said while the history was sent$")
    stamped = [line for line in slow.lines if line.startswith("[")]
    assert len(stamped) == 400 and all("[cut: 65536 bytes]" in line for line in stamped)
    # The live message came after both histories, not in the middle of one.
    assert slow.lines[-1].endswith("said while the history was sent")
    assert not slow.closed.called and not talker.closed.called
    assert not any("stopped reading" in t for t in log.texts())


@pytest_twisted.ensureDeferred
async def test_one_message_size_limit_on_every_door(serve):
    server = await serve(doors=("line", "web"), **OFF)
    telnet = await line_client(server.ports["line"])
    plain = await ws_client(server.ports["web"])
    page = await ws_client(server.ports["web"], protocols=["chatd.json"])
    big = "é" * 3000  # 6000 bytes: under the WebSocket frame cap, over the message limit
    plain.send(big)
    await plain.expect(r"^! your message was 6000 bytes, over the limit of 4096, and was not")
    page.send(json.dumps({"text": big}))
    error = json.loads(await page.expect('"type": "error"'))
    assert error["text"].startswith("your message was 6000 bytes, over the limit of 4096")
    plain.send("é" * 2048)  # exactly the limit: sent
    await telnet.expect(r": é{2048}$")
    assert not any(len(line.encode()) > 4200 for line in telnet.lines)
    assert not plain.closed.called and not page.closed.called


# -- case 3: bounded log lines, and a full disk ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_huge_command_arguments_are_logged_cut_with_their_size(serve, tmp_path, log):
    server = await serve(doors=("web",), max_message_bytes=0, max_ws_message_bytes=2**21, **OFF)
    page = await ws_client(server.ports["web"])
    page.send("/help " + "h" * 1_000_000)
    await page.expect(r"^! ")  # no such command: answered
    server.service.audit.close()
    audit = (tmp_path / "chat_log.txt").read_text()
    assert len(audit) < 2000 and "\u2026 (1000000 bytes)" in audit
    runs = [t for t in log.texts() if " runs /help " in t]
    assert runs and all(len(t) < 2000 for t in runs)
    assert "\u2026 (1000000 bytes)" in runs[0]


class FullDisk:
    """A file whose writes fail as on a full disk, until C{fixed}."""

    def __init__(self) -> None:
        self.fixed = False
        self.written: list[str] = []

    def write(self, data: str) -> int:
        if not self.fixed:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written.append(data)
        return len(data)

    def close(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_full_disk_never_fails_a_command_and_is_logged_once(serve, log):
    server = await serve(doors=("line",), **OFF)
    disk = FullDisk()
    server.service.audit._file = disk
    user = await line_client(server.ports["line"])
    for _ in range(3):
        user.send("/list")
        await user.expect(r"^\* online \(1\)")
    assert not user.closed.called
    errors = [t for t in log.texts() if "cannot write the audit log" in t]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    disk.fixed = True
    user.send("/list")
    await user.expect(r"^\* online \(1\)")
    assert len(disk.written) == 1 and "/list" in disk.written[0]
    again = [t for t in log.texts() if "is written again" in t]
    assert len(again) == 1 and "3 lines" in again[0]


@pytest_twisted.ensureDeferred
async def test_dev_full_as_the_audit_file(tmp_path):
    from chatd.audit import AuditLog

    audit = AuditLog(tmp_path / "unused")
    audit._file = open("/dev/full", "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    session = SimpleNamespace(
        user=SimpleNamespace(name="ann"), client=SimpleNamespace(door="line", peer="10.0.0.1")
    )
    audit.record(0.0, session, "help", "x")  # no exception: the command goes on
    audit.record(0.0, session, "help", "y")
    assert audit.missed == 2
    audit.close()


# -- case 7 and 11: invisible characters, nested JSON -------------------------------------


@pytest_twisted.ensureDeferred
async def test_invisible_marks_do_not_pass_in_messages(serve):
    server = await serve(doors=("line", "web"), **OFF)
    telnet = await line_client(server.ports["line"])
    page = await ws_client(server.ports["web"], protocols=["chatd.json"])
    page.send(json.dumps({"text": "pay\u200b to \u202eevil\u202c \ufeffnow\u2066"}))
    await telnet.expect(r": pay to evil now$")


@pytest_twisted.ensureDeferred
async def test_deeply_nested_json_gets_an_error_and_the_connection_stays(serve):
    server = await serve(doors=("web",), **OFF)
    page = await ws_client(server.ports["web"], protocols=["chatd.json"])
    page.send("[" * 50_000)
    error = json.loads(await page.expect('"type": "error"'))
    assert "nested deeper than" in error["text"]
    page.send('{"text": "' + "[" * 1000 + '"}')  # brackets in a string are text
    before = len(page.lines)
    page.send(json.dumps({"text": "/list"}))
    await until(lambda: len(page.lines) > before + 1, "answers")  # the string, /list
    assert any('"type": "presence"' in line for line in page.lines[before:])
    assert not page.closed.called
