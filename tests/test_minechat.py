"""minechat clients over real sockets: every exchange is compared byte for byte."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import formatEvent

from chatd.commands import CommandError
from tests.support import TIMEOUT, RawClient, line_client, raw_client, ws_client

DOORS = ("line", "web", "minechat_read", "minechat_write")

GREETING = b"Hello %username%! Enter your personal hash or leave it empty to create new account.\n"
ASK_NICKNAME = b"Enter preferred nickname below:\n"
WELCOME = b"Welcome to chat! Post your message below. End it with an empty line.\n"
SENT = b"Message send. Write more, end message with an empty line.\n"
OUTAGE = b"Error: the database is not answering right now; try again in a moment\n"


def account_line(nickname: str, token: str) -> bytes:
    return json.dumps({"nickname": nickname, "account_hash": token}).encode() + b"\n"


@pytest_twisted.async_yield_fixture
async def srv(serve):
    yield await serve(doors=DOORS, max_line_bytes=64)


async def writer(srv: Any) -> RawClient:
    client = await raw_client(srv.ports["minechat_write"])
    assert await client.lines() == GREETING
    return client


async def listener(srv: Any) -> RawClient:
    before = len(srv.room.members.listeners)
    client = await raw_client(srv.ports["minechat_read"])
    await _until(lambda: len(srv.room.members.listeners) > before)
    return client


async def _until(condition: Any) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return
        await _sleep(0.01)
    raise AssertionError("timed out")


def _sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def register(srv: Any, nickname: str) -> tuple[RawClient, str, str]:
    """A new account through the write port: the client, the name given and the token."""
    client = await writer(srv)
    client.send(b"\n")
    assert await client.lines() == ASK_NICKNAME
    client.send(nickname.encode() + b"\n")
    line = await client.lines()
    name, token = json.loads(line).values()
    uuid.UUID(token)
    assert line == account_line(name, token)  # key order and spacing, too
    assert await client.lines() == WELCOME
    return client, name, token


@pytest_twisted.ensureDeferred
async def test_register_then_post(srv):
    read = await listener(srv)
    client, name, _ = await register(srv, "alice")
    assert name == "alice"
    client.send(b"hello everyone\n\n")
    assert await client.lines() == SENT
    assert await read.lines() == b"alice: hello everyone\n"


@pytest_twisted.ensureDeferred
async def test_login_with_token(srv):
    first, _, token = await register(srv, "bob")
    first.transport.loseConnection()
    await first.closed
    read = await listener(srv)
    client = await writer(srv)
    client.send(token.encode() + b"\n")
    assert await client.lines(2) == account_line("bob", token) + WELCOME
    client.send(b"back again\n\n")
    assert await client.lines() == SENT
    assert await read.lines() == b"bob: back again\n"


@pytest_twisted.ensureDeferred
async def test_taken_nickname_gets_a_free_variant(srv):
    await register(srv, "carol")
    _, name, token = await register(srv, "carol")
    assert name != "carol" and "carol" in name
    uuid.UUID(token)


@pytest_twisted.ensureDeferred
async def test_bad_token_falls_through_to_registration(srv):
    client = await writer(srv)
    client.send(b"not-a-token\n")
    assert await client.lines(2) == b"null\n" + ASK_NICKNAME
    client.send(b"dave\n")
    account = json.loads(await client.lines())
    assert account["nickname"] == "dave"
    assert await client.lines() == WELCOME


@pytest_twisted.ensureDeferred
async def test_pipelined_login_and_messages(srv):
    first, _, token = await register(srv, "erin")
    first.transport.loseConnection()
    read = await listener(srv)
    client = await raw_client(srv.ports["minechat_write"])
    client.send(token.encode() + b"\n\nfirst\n\nsecond a\r\nsecond b\n\n")
    assert await client.lines(6) == (
        GREETING + account_line("erin", token) + WELCOME + SENT + SENT + SENT
    )
    assert await read.lines(2) == b"erin: first\nerin: second a / second b\n"


@pytest_twisted.ensureDeferred
async def test_lines_sent_before_closing_are_posted(srv):
    read = await listener(srv)
    first, _, token = await register(srv, "frank")
    first.transport.loseConnection()
    client = await raw_client(srv.ports["minechat_write"])
    client.send(token.encode() + b"\nbye for now\n\n")
    client.transport.loseConnection()
    new = await raw_client(srv.ports["minechat_write"])
    new.send(b"\ngrace\nhi, I just arrived\n\n")
    new.transport.loseConnection()
    got = sorted((await read.lines(2)).splitlines())
    assert got == [b"frank: bye for now", b"grace: hi, I just arrived"]
    await _until(lambda: srv.room.online() == [])


@pytest_twisted.ensureDeferred
async def test_empty_line_alone_is_a_keep_alive(srv):
    read = await listener(srv)
    client, _, _ = await register(srv, "heidi")
    client.send(b"\n")
    assert await client.lines() == SENT
    client.send(b"\n\n")
    assert await client.lines(2) == SENT + SENT
    client.send(b"now\n\n")
    assert await client.lines() == SENT
    assert await read.lines() == b"heidi: now\n"
    assert read.received == b"heidi: now\n"


@pytest_twisted.ensureDeferred
async def test_long_lines_and_bad_utf8(srv):
    read = await listener(srv)
    client, _, _ = await register(srv, "ivan")
    longest = b"y" * 64  # max_line_bytes in these tests
    client.send(b"x" * 65 + b"\r\nkept\n\n" + longest + b"\r\n\n\xff\xfeok\n\n")
    assert await client.lines(3) == SENT + SENT + SENT
    assert await read.lines(3) == (
        b"ivan: kept\nivan: " + longest + b"\nivan: \xef\xbf\xbd\xef\xbf\xbdok\n"
    )


@pytest_twisted.ensureDeferred
async def test_command_errors_are_not_shown_to_the_writer(srv):
    client, _, _ = await register(srv, "judy")
    client.send(b"/nosuchcommand\n\nplain\n\n")
    assert await client.lines(2) == SENT + SENT  # and no error line between them


@pytest_twisted.ensureDeferred
async def test_messages_cross_every_door(srv):
    read = await listener(srv)
    telnet = await line_client(srv.ports["line"])
    telnet_name = telnet.lines[0].split()[-1]
    ws = await ws_client(srv.ports["web"])
    await ws.expect(r"^\* you are ")
    client, _, _ = await register(srv, "kim")
    await telnet.expect(r"^\* .* is now known as kim$")
    client.send(b"hi all\nfrom minechat\n\n")
    await telnet.expect(r"^kim: hi all / from minechat$")
    await ws.expect(r"^kim: hi all / from minechat$")
    assert await read.lines() == b"kim: hi all / from minechat\n"
    telnet.send("hello minechat")
    assert await read.lines() == f"{telnet_name}: hello minechat\n".encode()
    telnet.send("/w kim a secret")
    ws.close()
    await telnet.expect(r"left$")
    telnet.send("/list")
    online = await telnet.expect(r"^\* online")
    assert online == f"* online (2): {', '.join(sorted([telnet_name, 'kim'], key=str.casefold))}"
    telnet.send("last")
    assert await read.lines() == f"{telnet_name}: last\n".encode()
    assert read.received == (
        b"kim: hi all / from minechat\n"
        + f"{telnet_name}: hello minechat\n{telnet_name}: last\n".encode()
    )
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_tokens_work_on_every_door(srv):
    _, _, token = await register(srv, "lena")
    telnet = await line_client(srv.ports["line"])
    telnet.send(f"/auth {token}")
    await telnet.expect(r"^\* you are lena \(logged in\)$")
    telnet.send("/logout")
    await telnet.expect(r"^\* you are ")
    telnet.send("/register mallory password123")
    created = await telnet.expect(r"^\* account mallory created")
    created = await telnet.expect(r"^\*   [0-9a-f]{8}-")
    token = created.rsplit(" ", 1)[-1]
    client = await writer(srv)
    client.send(token.encode() + b"\n")
    assert await client.lines(2) == account_line("mallory", token) + WELCOME
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_refused_message_is_still_acknowledged(serve):
    srv = await serve(doors=DOORS, messages_per_hour=1)
    read = await listener(srv)
    client, _, _ = await register(srv, "olga")
    client.send(b"one\n\ntwo\n\nthree\n\n")
    assert await client.lines(3) == SENT + SENT + SENT  # no error line: none exists
    telnet = await line_client(srv.ports["line"])
    telnet.send("after")  # messages reach listeners in order: this one comes last
    await read.lines(2)
    name = telnet.lines[0].split()[-1]
    assert read.received == f"olga: one\n{name}: after\n".encode()
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_flood_caps_apply_to_both_ports(serve):
    srv = await serve(doors=DOORS, connections_per_address=1)
    telnet = await line_client(srv.ports["line"])
    refused_writer = await raw_client(srv.ports["minechat_write"])
    await refused_writer.closed
    assert refused_writer.received == GREETING
    refused_reader = await raw_client(srv.ports["minechat_read"])
    await refused_reader.closed
    assert refused_reader.received == b""
    assert srv.room.members.listeners == ()
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_nickname_is_made_a_valid_name(srv):
    _, name, _ = await register(srv, "Вася Пупкин!")
    assert name == "ВасяПупкин"
    _, name, _ = await register(srv, "")
    assert len(name) >= 2 and srv.room.find(name) is not None


@pytest_twisted.ensureDeferred
async def test_wrong_tokens_never_lock_out_a_valid_token_from_the_same_address(srv):
    _, _, token = await register(srv, "nina")
    for i in range(6):  # a client with a typo, retrying: each gets null and hangs up
        client = await writer(srv)
        client.send(f"00000000-0000-4000-8000-00000000000{i}\n".encode())
        assert await client.lines(2) == b"null\n" + ASK_NICKNAME
        client.transport.loseConnection()
    guesser = await line_client(srv.ports["line"])
    for i in range(6):
        guesser.send(f"/auth 00000000-0000-4000-8000-00000000000{i}")
        await guesser.expect(r"^! unknown token")
    client = await writer(srv)
    client.send(token.encode() + b"\n")
    assert await client.lines(2) == account_line("nina", token) + WELCOME
    guesser.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_token_is_answered_like_an_unknown_one_not_hung_up_on(srv):
    def refuse(session, token):
        return defer.fail(CommandError("not now"))

    srv.room.login_with_token = refuse
    client = await writer(srv)
    client.send(b"00000000-0000-4000-8000-000000000000\n")
    assert await client.lines(2) == b"null\n" + ASK_NICKNAME  # what clients expect
    client.send(b"fresh\n")  # the client may register instead
    name, token = json.loads(await client.lines()).values()
    assert name == "fresh" and await client.lines() == WELCOME


@pytest_twisted.ensureDeferred
async def test_after_exit_a_writer_is_not_told_its_later_lines_were_sent(srv):
    client, _, _ = await register(srv, "leaver")
    # While "bye all" is being saved, /exit waits for it, and the line after must not count.
    client.send(b"bye all\n\n/exit\n\nstill here?\n\n")
    await client.closed.addTimeout(TIMEOUT, reactor)
    assert client.received.count(SENT) == 2  # "bye all" and /exit, not the line after it


@pytest_twisted.ensureDeferred
async def test_the_write_port_posts_to_the_default_room_when_another_device_left_it(srv):
    read = await listener(srv)
    client, name, token = await register(srv, "pat")
    telnet = await line_client(srv.ports["line"])
    telnet.send(f"/auth {token}")
    await telnet.expect(r"^\* you are pat \(logged in\)$")
    telnet.send("/join #dev")
    await telnet.expect(r"^\* you joined #dev")
    telnet.send("/part #lobby")
    await telnet.expect(r"^\* you left #lobby$")
    client.send(b"hello lobby\n\n")
    assert await client.lines() == SENT
    assert await read.lines() == b"pat: hello lobby\n"  # the read port streams #lobby
    await telnet.expect(r"^\[#lobby\] pat: hello lobby$")  # the other device is back in it
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_a_message_the_default_room_refuses_is_an_error_line_not_a_sent(srv):
    client, _, token = await register(srv, "quinn")
    telnet = await line_client(srv.ports["line"])
    telnet.send(f"/auth {token}")
    await telnet.expect(r"^\* you are quinn \(logged in\)$")
    telnet.send("/join #dev")
    await telnet.expect(r"^\* you joined #dev")
    telnet.send("/part #lobby")
    await telnet.expect(r"^\* you left #lobby$")

    def refuse(session, name):
        raise CommandError(f"{name} is closed today")

    srv.room.join = refuse
    client.send(b"anyone?\n\nsecond\n\n")
    assert await client.lines(2) == b"Error: not sent: #lobby is closed today\n" * 2
    telnet.close()


def tracebacks(log) -> list[str]:
    return [formatEvent(e) for e in log.events if "log_failure" in e]


@pytest_twisted.ensureDeferred
async def test_a_login_in_a_database_outage_is_a_clear_error_and_one_log_line(
    serve, outage, pg_url, log
):
    proxy = outage(pg_url)
    srv = await serve(doors=DOORS, storage_url=proxy.url, storage_timeout=1.0)
    first, _, token = await register(srv, "rita")
    first.transport.loseConnection()
    proxy.cut()
    client = await writer(srv)
    client.send(token.encode() + b"\n")
    assert await client.lines() == OUTAGE
    await client.closed
    newcomer = await writer(srv)
    newcomer.send(b"\n")
    assert await newcomer.lines() == ASK_NICKNAME
    newcomer.send(b"sam\n")
    assert await newcomer.lines() == OUTAGE
    await newcomer.closed
    said = [t for t in log.texts() if "minechat login not done" in t]
    assert len(said) == 2 and "unreachable" in said[0]  # one line each
    assert tracebacks(log) == []
