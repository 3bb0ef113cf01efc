"""The WebSocket door over real sockets: chat across doors, and every kind of bad input."""

from __future__ import annotations

import base64
import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.support import (
    flood_until_dropped,
    line_client,
    never_reading_socket,
    pause,
    raw_client,
    ws_client,
)


def name_of(client) -> str:
    return next(line for line in client.lines if line.startswith("* you are ")).split()[-1]


@pytest_twisted.ensureDeferred
async def test_websocket_and_telnet_users_chat_whisper_rename_and_list(server):
    telnet = await line_client(server.ports["line"])
    ws = await ws_client(server.ports["web"], path="/ws")
    await ws.expect(r"^\* you are ")
    await telnet.expect(rf"^\* {name_of(ws)} joined$")
    ws.send("/rename Webby")
    await telnet.expect(rf"^\* {name_of(ws)} is now known as Webby$")
    telnet.send("/rename Tel")
    await ws.expect(r" is now known as Tel$")
    ws.send("/list")
    await ws.expect(r"^\* online \(2\): Tel, Webby$")
    ws.send("hello\nsecond line")  # one frame, two lines
    await telnet.expect(r"^Webby: hello$")
    await telnet.expect(r"^Webby: second line$")
    telnet.send("/msg webby just you")
    await ws.expect(r"^>> Tel: just you$")
    ws.send("/w Tel \x1b]0;owned\x07back\x07 at\ryou")
    await telnet.expect(r"^>> Webby: back atyou$")
    ws.send("/exit")
    await ws.expect(r"^\* Goodbye, Webby!$")
    await ws.closed
    assert ws.close_code == 1000
    await telnet.expect(r"^\* Webby left$")
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_a_public_line_in_the_websocket_fanout_is_prefixed_outside_its_room_not_echoed(
    server,
):
    """The door's fan-out (one frame for everyone) gives each viewer what is theirs: a text
    WebSocket is not sent its own line, sees another room's line prefixed; the page (JSON)
    gets its own line back, with the room."""
    ann = await ws_client(server.ports["web"], path="/ws")
    bob = await ws_client(server.ports["web"], path="/ws")
    page = await ws_client(server.ports["web"], path="/ws", protocols=["chatd.json"])
    for person, name in ((ann, "ann"), (bob, "bob")):
        await person.expect(r"^\* you are ")
        person.send(f"/rename {name}")
        await person.expect(rf"^\* you are {name}$")
    bob.send("/join #dev")
    await bob.expect(r"#dev")
    ann.send("hi all")
    await bob.expect(r"^\[#lobby\] ann: hi all$")
    said = await page.expect(r'"text": "hi all"')
    assert json.loads(said)["room"] == "#lobby"
    ann.send("/list")
    await ann.expect(r"^\* online")
    assert not [line for line in ann.lines if "hi all" in line]  # no echo of one's own line
    bob.send("/join #lobby")  # back in #lobby (the door kept who was where: asked again)
    await bob.expect(r"now talking in #lobby")
    ann.send("hi again")
    await bob.expect(r"^ann: hi again$")
    bob.send("hi from the lobby")
    await ann.expect(r"^bob: hi from the lobby$")
    assert not [line for line in bob.lines if "hi from the lobby" in line]
    for person in (ann, bob, page):
        person.close()


@pytest_twisted.ensureDeferred
async def test_a_binary_frame_gets_an_error_and_the_connection_stays(server):
    ws = await ws_client(server.ports["web"])
    ws.sendMessage(b"\x00\x01binary", isBinary=True)
    await ws.expect(r"^! binary frames are not supported; send text frames of UTF-8$")
    ws.send("/list")
    await ws.expect(r"^\* online \(1\)")
    ws.close()


@pytest_twisted.ensureDeferred
async def test_a_message_over_64_kib_closes_with_1009_and_others_stay(server):
    telnet = await line_client(server.ports["line"])
    ws = await ws_client(server.ports["web"])
    ws.send("x" * 70_000)
    await ws.closed
    assert ws.close_code == 1009
    await telnet.expect(r" left$")
    assert not any("xxxx" in line for line in telnet.lines)
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_in_a_text_frame_closes_with_1007(server):
    ws = await ws_client(server.ports["web"])
    ws.sendMessage(b"caf\xe9", isBinary=False)
    await ws.closed
    assert ws.close_code == 1007


@pytest_twisted.ensureDeferred
async def test_a_stalled_opening_handshake_is_dropped(serve):
    server = await serve(doors=("web",), handshake_timeout=0.3)
    raw = await raw_client(server.ports["web"])
    raw.transport.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websoc")
    await raw.closed.addTimeout(5, reactor)
    assert not server.room.members.sessions


@pytest_twisted.ensureDeferred
async def test_an_open_websocket_outlives_the_handshake_timeout(serve):
    server = await serve(doors=("web",), handshake_timeout=0.2)
    ws = await ws_client(server.ports["web"])
    await pause(0.6)  # quiet for three handshake timeouts
    ws.send("/list")
    await ws.expect(r"^\* online \(1\)")
    assert not ws.closed.called
    ws.close()


def upgrade_request(path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@pytest_twisted.ensureDeferred
async def test_a_websocket_client_that_never_reads_is_dropped_others_keep_chatting(serve, log):
    server = await serve(
        max_output_bytes=65536, max_line_bytes=40_000, max_message_bytes=40_000,
        lines_per_second=0, messages_per_hour=0,
    )  # fmt: skip
    talker = await line_client(server.ports["line"])
    listener = await ws_client(server.ports["web"])
    sock = never_reading_socket(server.ports["web"])
    sock.sendall(upgrade_request())
    while len(server.room.members.sessions) < 3:
        await pause(0.01)
    await flood_until_dropped(server, talker, listener, sock, log)


def client_text_frame(text: str) -> bytes:
    """A masked text frame, as a browser sends it."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each frame the server sent after its handshake."""
    data = data[data.index(b"\r\n\r\n") + 4 :]
    frames = []
    while len(data) >= 2:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        frames.append((data[0] & 0x0F, data[start : start + size]))
        data = data[start + size :]
    return frames


@pytest_twisted.ensureDeferred
async def test_what_the_server_says_before_closing_arrives_before_the_close_frame(server):
    raw = await raw_client(server.ports["web"])
    raw.send(upgrade_request())
    while b"* you are " not in raw.received:
        await pause(0.01)
    raw.send(client_text_frame("/exit"))
    await raw.closed.addTimeout(5, reactor)
    frames = server_frames(raw.received)
    assert frames[-1][0] == 0x8  # close
    goodbye = [p for op, p in frames if op == 0x1 and p.startswith(b"* Goodbye, ")]
    assert len(goodbye) == 1


@pytest_twisted.ensureDeferred
async def test_a_client_dribbling_its_handshake_is_dropped_at_the_deadline(serve):
    server = await serve(doors=("web",), handshake_timeout=0.5)
    raw = await raw_client(server.ports["web"])
    request = upgrade_request()
    for i in range(40):  # one byte every 0.05 s: never idle, never finished in 2 s
        if raw.closed.called:
            break
        raw.send(request[i : i + 1])
        await pause(0.05)
    assert raw.closed.called
    assert not server.room.members.sessions


async def page_status(raw) -> bytes:
    raw.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return (await raw.lines(1)).split(b" ")[1]


@pytest_twisted.ensureDeferred
async def test_one_address_holds_only_so_many_connections_not_upgraded(serve):
    server = await serve(doors=("web",), connections_per_address=2)
    port = server.ports["web"]

    async def close(*clients) -> None:
        for client in clients:
            client.transport.loseConnection()
            await client.closed
        await pause(0.05)  # the server notices

    first, second = await raw_client(port), await raw_client(port)
    third = await raw_client(port)
    await third.closed.addTimeout(5, reactor)  # refused: two are open and not upgraded
    await close(first)
    page = await raw_client(port)
    assert await page_status(page) == b"200"
    await close(second, page)
    chats = [await ws_client(port) for _ in range(2)]  # upgraded: no longer counted here
    page = await raw_client(port)
    assert await page_status(page) == b"200"
    for chat in chats:
        chat.close()


@pytest_twisted.ensureDeferred
async def test_behind_haproxy_the_cap_counts_each_client_address(serve):
    server = await serve(doors=("web",), haproxy=True, connections_per_address=1)
    port = server.ports["web"]
    await raw_client(port, via_haproxy_from="192.0.2.1")  # holds its one plain connection
    other = await raw_client(port, via_haproxy_from="192.0.2.2")
    assert await page_status(other) == b"200"
    again = await raw_client(port, via_haproxy_from="192.0.2.1")
    again.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await again.closed.addTimeout(5, reactor)
    assert b"HTTP/1.1" not in again.received  # refused, not served


# -- one port, two parsers: the first request of a connection decides who reads it ----------


async def received(raw, data: bytes) -> bytes:
    """What C{raw} has received once it holds C{data} (fails after about 5 s)."""
    for _ in range(250):
        if data in raw.received:
            return raw.received
        if raw.closed.called:
            break
        await pause(0.02)
    raise AssertionError(f"{data!r} did not arrive; received {raw.received[-300:]!r}")


@pytest_twisted.ensureDeferred
async def test_an_upgrade_at_any_chat_address_is_greeted_even_when_it_arrives_in_pieces(server):
    for path in ("/", "/ws", "/ws/", "/?x=1", "/ws?hello=0"):
        raw = await raw_client(server.ports["web"])
        request = upgrade_request(path)
        for start in range(0, len(request), 40):
            raw.send(request[start : start + 40])
            await pause(0.01)
        await received(raw, b"* you are ")
        raw.send(client_text_frame("/list"))
        await received(raw, b"* online (")
        raw.transport.loseConnection()


@pytest.mark.parametrize(
    "request_",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + upgrade_request(),  # keep-alive
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # a browser opening /ws
    ],
    ids=["after-a-page-request", "without-upgrade"],
)
@pytest_twisted.ensureDeferred
async def test_a_websocket_not_asked_for_first_on_its_connection_is_told_how(serve, request_):
    server = await serve(doors=("web",))
    raw = await raw_client(server.ports["web"])
    raw.send(request_)
    answer = await received(raw, b"The chat page is at /.\n")
    assert b"HTTP/1.1 426 " in answer
    assert b"open it with the first request of a new connection" in answer
    assert not server.room.members.sessions
    raw.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_pipelined_page_requests_are_all_answered(server):
    raw = await raw_client(server.ports["web"])
    raw.send(
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    answer = await received(raw, b"</html>")
    assert answer.count(b"HTTP/1.1 200 ") == 2
    raw.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_behind_haproxy_each_websocket_counts_under_its_client_address(serve):
    server = await serve(doors=("web",), haproxy=True, connections_per_address=1)
    port = server.ports["web"]
    ann = await raw_client(port, via_haproxy_from="192.0.2.1")
    ann.send(upgrade_request())
    await received(ann, b"* you are ")
    bob = await raw_client(port, via_haproxy_from="192.0.2.2")
    bob.send(upgrade_request())
    await received(bob, b"* you are ")
    again = await raw_client(port, via_haproxy_from="192.0.2.1")
    again.send(upgrade_request())
    await received(again, b"too many connections from your address")
    await again.closed
    for raw in (ann, bob):
        raw.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_the_page_and_the_chat_share_a_tls_port(serve, tmp_path):
    from twisted.internet import ssl
    from twisted.internet.endpoints import SSL4ClientEndpoint
    from twisted.internet.protocol import Factory

    from tests.support import RawClient
    from tests.test_line_door import self_signed_pem

    server = await serve(doors=())
    pem = self_signed_pem(tmp_path)
    port = await server.listen(f"ssl:0:interface=127.0.0.1:privateKey={pem}", "web")

    async def tls_client() -> RawClient:
        client = RawClient()
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, ssl.CertificateOptions())
        await endpoint.connect(Factory.forProtocol(lambda: client))
        return client

    page = await tls_client()
    assert await page_status(page) == b"200"
    chat = await tls_client()
    chat.send(upgrade_request())
    await received(chat, b"* you are ")
    chat.send(client_text_frame("/list"))
    await received(chat, b"* online (1)")
    for client in (page, chat):
        client.transport.loseConnection()
