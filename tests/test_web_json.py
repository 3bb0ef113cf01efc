"""The web door: the page over HTTP, the chatd.json subprotocol, and Origin checks."""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
import treq

from tests.support import line_client, ws_client

JSON = ["chatd.json"]


async def json_client(port: int, **kwargs):
    client = await ws_client(port, protocols=JSON, **kwargs)
    me = json.loads(await client.expect(r'"type": "identity"'))
    client.name = me["name"]
    return client


def events(client, kind: str) -> list[dict]:
    return [e for e in map(json.loads, client.lines) if e["type"] == kind]


@pytest_twisted.ensureDeferred
async def test_page_and_its_files_are_served(server):
    base = f"http://127.0.0.1:{server.ports['web']}"
    page = await treq.get(f"{base}/")
    assert page.code == 200
    assert page.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    html = await page.text()
    assert '<script src="/static/app.js"' in html
    script = await treq.get(f"{base}/static/app.js")
    assert script.headers.getRawHeaders("content-type") == ["text/javascript; charset=utf-8"]
    assert '"chatd.json"' in await script.text()
    css = await treq.get(f"{base}/static/style.css")
    assert css.code == 200
    await css.content()
    assert '<link rel="icon" href="/static/favicon.svg"' in html
    icon = await treq.get(f"{base}/static/favicon.svg")
    assert icon.headers.getRawHeaders("content-type") == ["image/svg+xml"]
    assert (await icon.text()).startswith("<svg")


@pytest_twisted.ensureDeferred
async def test_json_events_identity_presence_messages(server):
    alice = await json_client(server.ports["web"])
    bob = await json_client(server.ports["web"])
    assert json.loads(await alice.expect(r'"type": "notice"'))["text"].startswith("Welcome")
    presence = json.loads(await alice.expect(rf'"type": "presence".*"{bob.name}"'))
    assert sorted(presence["names"]) == sorted([alice.name, bob.name])

    alice.send(json.dumps({"text": "hello <b>bob</b>"}))
    got = json.loads(await bob.expect(r'"type": "message"'))
    assert got["from"] == alice.name
    assert got["text"] == "hello <b>bob</b>"
    assert got["private"] is False
    assert isinstance(got["id"], int) and isinstance(got["time"], float)
    # The JSON door echoes a public message to its sender, with the same id.
    echo = json.loads(await alice.expect(r'"type": "message"'))
    assert echo["id"] == got["id"]

    alice.send(json.dumps({"text": f"/w {bob.name} psst"}))
    whisper = json.loads(await bob.expect(r'"private": true'))
    assert (whisper["from"], whisper["to"], whisper["text"]) == (alice.name, bob.name, "psst")
    assert whisper["id"] > got["id"]
    alice.close()
    bob.close()


@pytest_twisted.ensureDeferred
async def test_json_and_text_clients_share_the_room(server):
    web = await json_client(server.ports["web"])
    plain = await ws_client(server.ports["web"], "/ws")
    telnet = await line_client(server.ports["line"])
    telnet_name = telnet.lines[0].split()[-1]
    web.send(json.dumps({"text": "hi all"}))
    await plain.expect(rf"^{web.name}: hi all$")
    await telnet.expect(rf"^{web.name}: hi all$")
    telnet.send("hi web")
    got = json.loads(await web.expect(r'"text": "hi web"'))
    assert got["from"] == telnet_name
    # Text clients never see presence updates as lines.
    assert not any(line.startswith("{") for line in plain.lines)
    for c in (web, plain, telnet):
        c.close()


@pytest.mark.parametrize(
    "frame, error",
    [
        ("hello", "send a JSON object"),
        ("[1, 2]", "send a JSON object"),
        ('{"text": 5}', 'send JSON such as {"text": "hello"}'),
        ('{"type": "resume"}', "resume needs a message id"),
        ('{"type": "resume", "after": "x"}', "resume needs a message id"),
        ('{"type": "resume", "after": -1}', "resume needs a message id"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_json_requests_get_a_clear_error(server, frame, error):
    client = await json_client(server.ports["web"])
    client.send(frame)
    got = json.loads(await client.expect(r'"type": "error"'))
    assert got["text"].startswith(error)
    client.send(json.dumps({"text": "/nosuch"}))
    got = json.loads(await client.expect(r'"type": "error"'))
    assert got["text"].startswith("unknown command /nosuch")
    client.close()


@pytest_twisted.ensureDeferred
async def test_resume_sends_what_was_missed(server):
    talker = await json_client(server.ports["web"])
    for n in range(3):
        talker.send(json.dumps({"text": f"message {n}"}))
        await talker.expect(rf'"text": "message {n}"')
    first = events(talker, "message")[0]["id"]

    late = await json_client(server.ports["web"])
    late.send(json.dumps({"type": "resume", "after": first}))
    history = json.loads(await late.expect(r'"type": "history"'))
    assert history["reason"] == "missed"
    assert [m["text"] for m in history["messages"]] == ["message 1", "message 2"]
    talker.close()
    late.close()


@pytest_twisted.ensureDeferred
async def test_origin_checks(serve):
    server = await serve(doors=("web",), allowed_origins="https://chat.example")
    port = server.ports["web"]
    with pytest.raises(ConnectionError, match="403"):
        await ws_client(port, protocols=JSON, origin="http://evil.example")
    for origin in (None, f"http://127.0.0.1:{port}", "https://chat.example"):
        client = await json_client(port, origin=origin)
        client.close()


@pytest_twisted.ensureDeferred
async def test_logout_cancels_the_token_of_that_device_only(server):
    telnet = await line_client(server.ports["line"])
    telnet.send("/register Alice correct horse")
    created = await telnet.expect(r"^\* account Alice created")
    created = await telnet.expect(r"^\*   [0-9a-f]{8}-")
    first = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", created).group(0)
    page = await json_client(server.ports["web"])
    page.send(json.dumps({"text": "/login Alice correct horse"}))
    device = json.loads(await page.expect(r'"type": "identity", "name": "Alice"'))["token"]
    page.send(json.dumps({"text": "/logout"}))
    await page.expect(r'"type": "identity", "name": "(?!Alice)')
    later = await line_client(server.ports["line"])
    later.send(f"/auth {device}")
    await later.expect(r"^! unknown token; check it, or /login <name> <password>$")
    later.send(f"/auth {first}")  # the first device's own token still works
    await later.expect(r"^\* you are Alice \(logged in\)$")
    later.send("/logout")  # logged in with a token that may be on other devices: kept
    await later.expect(r"^\* you are (?!Alice)")
    later.send(f"/auth {first}")
    await later.expect(r"^\* you are Alice \(logged in\)$")
    for client in (telnet, page, later):
        client.close()


async def hello_client(port: int, token: str | None, *then: dict):
    """A page reconnecting: ?hello=1, the saved token in the first frame, then C{then}."""
    client = await ws_client(port, path="/ws?hello=1", protocols=JSON)
    client.send(json.dumps({"type": "hello", "token": token}))
    for request in then:
        client.send(json.dumps(request))
    me = json.loads(await client.expect(r'"type": "identity"'))
    client.name = me["name"]
    return client


@pytest_twisted.ensureDeferred
async def test_hello_with_a_token_joins_already_logged_in(server):
    telnet = await line_client(server.ports["line"])
    telnet.send("/register Zed correct horse")
    created = await telnet.expect(r"^\* account Zed created")
    created = await telnet.expect(r"^\*   [0-9a-f]{8}-")
    token = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", created).group(0)
    telnet.send("hello before")
    page = await hello_client(server.ports["web"], token, {"type": "resume", "after": 0})
    identities = events(page, "identity")
    assert [(i["name"], i["account"]) for i in identities] == [("Zed", "Zed")]
    history = json.loads(await page.expect(r'"type": "history"'))
    assert [m["text"] for m in history["messages"]] == ["hello before"]
    # Zed was online already (telnet): a second device joins without a word to the others.
    watcher = await json_client(server.ports["web"])
    watcher.send(json.dumps({"text": "/list"}))
    await watcher.expect(r'"type": "presence"')
    again = await hello_client(server.ports["web"], token)
    again.send(json.dumps({"text": "said from the second device"}))
    await watcher.expect(r'"text": "said from the second device"')
    assert not [n for n in events(watcher, "notice") if "Zed" in n["text"]]
    for client in (telnet, page, watcher, again):
        client.close()


@pytest_twisted.ensureDeferred
async def test_hello_with_a_bad_token_or_none_joins_as_a_guest(server):
    stale = await hello_client(server.ports["web"], "00000000-dead-beef-0000-000000000000")
    assert json.loads(stale.lines[0])["account"] is None
    error = json.loads(await stale.expect(r'"type": "error"'))
    assert error["text"] == "your saved login is no longer valid; log in again"
    guest = await hello_client(server.ports["web"], None)
    assert events(guest, "identity")[0]["account"] is None
    # A first frame that is not a hello joins as a guest, and is acted on.
    other = await ws_client(server.ports["web"], path="/ws?hello=1", protocols=JSON)
    other.send(json.dumps({"text": "/nosuch"}))
    await other.expect(r'"type": "identity"')
    got = json.loads(await other.expect(r'"type": "error"'))
    assert got["text"].startswith("unknown command /nosuch")
    # Later, a hello is refused clearly.
    other.send(json.dumps({"type": "hello", "token": None}))
    got = json.loads(await other.expect(r'"type": "error"'))
    assert got["text"].startswith("hello is only the first frame")
    for client in (stale, guest, other):
        client.close()


@pytest_twisted.ensureDeferred
async def test_login_and_register_take_the_name_and_password_as_fields(server):
    page = await json_client(server.ports["web"])
    page.send(json.dumps({"type": "register", "name": "Mary Jane", "password": "pw with spaces"}))
    refused = json.loads(await page.expect(r'"type": "error"'))
    assert refused["request"] == "register"
    assert refused["text"].startswith("a name has letters, digits")
    # No account "Mary" with the password "Jane pw with spaces" either.
    page.send(json.dumps({"type": "login", "name": "Mary", "password": "Jane pw with spaces"}))
    refused = json.loads(await page.expect(r'"type": "error".*"request": "login"'))
    assert refused["text"] == "wrong name or password"

    page.send(json.dumps({"type": "register", "name": "MaryJane", "password": "pw with spaces"}))
    me = json.loads(await page.expect(r'"type": "identity", "name": "MaryJane"'))
    assert me["account"] == "MaryJane" and me["token"]
    done = json.loads(await page.expect(r'"type": "notice".*"request": "register"'))
    assert done["text"] == "account MaryJane created; you are logged in"
    assert not [n for n in events(page, "notice") if me["token"] in n["text"]]

    other = await json_client(server.ports["web"])
    other.send(json.dumps({"type": "login", "name": "MaryJane", "password": "pw with spaces"}))
    await other.expect(r'"type": "identity", "name": "MaryJane"')
    done = json.loads(await other.expect(r'"type": "notice".*"request": "login"'))
    assert done["text"] == "logged in as MaryJane"
    other.send(json.dumps({"type": "login", "name": "MaryJane"}))
    bad = json.loads(await other.expect(r'"type": "error".*"request": "login"'))
    assert bad["text"].startswith('send {"type": "login", "name"')
    page.close()
    other.close()


@pytest_twisted.ensureDeferred
async def test_rooms_over_json_and_telnet(server):
    """The room on every event; text sent with a room goes there; telnet sees it prefixed."""
    page = await json_client(server.ports["web"])
    telnet = await line_client(server.ports["line"])
    telnet.send("/join #dev")
    await telnet.expect(r"^\* you joined #dev")
    page.send(json.dumps({"text": "/join #dev"}))
    rooms = json.loads(await page.expect(r'"type": "rooms"'))
    assert rooms == {"type": "rooms", "rooms": ["#lobby", "#dev"], "current": "#dev", "room": None}
    page.send(json.dumps({"text": "for the lobby", "room": "#lobby"}))
    lobby = json.loads(await page.expect(r'"text": "for the lobby"'))
    assert lobby["room"] == "#lobby"
    await telnet.expect(rf"^\[#lobby\] {re.escape(page.name)}: for the lobby$")
    telnet.send("for dev")
    dev = json.loads(await page.expect(r'"text": "for dev"'))
    assert dev["room"] == "#dev"
    page.send(json.dumps({"text": "nope", "room": "#elsewhere"}))
    error = json.loads(await page.expect(r'"type": "error"'))
    assert error["text"] == "you are not in #elsewhere; /join #elsewhere first"
    page.send(json.dumps({"type": "resume", "after": 0}))
    histories = [json.loads(await page.expect(r'"type": "history"')) for _ in range(2)]
    assert {h["room"]: [m["text"] for m in h["messages"]] for h in histories} == {
        "#lobby": ["for the lobby"],
        "#dev": ["for dev"],
    }
    page.close()
    telnet.close()


@pytest_twisted.ensureDeferred
async def test_room_commands_over_json(server):
    """The owner's /topic, /kick and /invite, /who, /rooms and /part (the default room
    too) from the page: answered as events, with the room they are about."""
    owner = await json_client(server.ports["web"])
    owner.send(json.dumps({"type": "register", "name": "Olga", "password": "pw for olga"}))
    await owner.expect(r'"type": "identity", "name": "Olga"')
    guest = await json_client(server.ports["web"])
    owner.send(json.dumps({"text": "/join #ops"}))
    await owner.expect(r'"current": "#ops"')
    guest.send(json.dumps({"text": "/join #ops"}))
    await guest.expect(r'"current": "#ops"')

    owner.send(json.dumps({"text": "/topic deploys only", "room": "#ops"}))
    topic = json.loads(await guest.expect(r'"text": "Olga set the topic: deploys only"'))
    assert topic["room"] == "#ops"
    guest.send(json.dumps({"text": "/who", "room": "#ops"}))
    who = json.loads(await guest.expect(r'"type": "presence".*"update": false'))
    assert (who["room"], sorted(who["names"])) == ("#ops", sorted(["Olga", guest.name]))
    guest.send(json.dumps({"text": "/rooms"}))
    listed = json.loads(await guest.expect(r'"text": "rooms \('))
    assert "> #ops (2): deploys only" in listed["text"]

    guest.send(json.dumps({"text": "/part", "room": "#lobby"}))  # the default room, too
    rooms = json.loads(await guest.expect(r'"type": "rooms", "rooms": \["#ops"\]'))
    assert rooms["current"] == "#ops"
    guest.send(json.dumps({"text": "/part", "room": "#ops"}))
    last = json.loads(await guest.expect(r'"type": "error"'))
    assert last["text"] == (
        "#ops is the only room you are in; /join another room first (/quit leaves the chat)"
    )

    owner.send(json.dumps({"text": f"/kick {guest.name} 3", "room": "#ops"}))
    await guest.expect(r'"text": "you were removed from #ops"')
    back = json.loads(await guest.expect(r'"type": "rooms"'))
    assert (back["rooms"], back["current"]) == (["#lobby"], "#lobby")
    owner.send(json.dumps({"text": f"/invite {guest.name}", "room": "#ops"}))
    await guest.expect(r'"text": "Olga invited you to #ops; /join #ops"')
    guest.send(json.dumps({"text": "/join #ops"}))
    await guest.expect(r'"type": "rooms", "rooms": \["#lobby", "#ops"\]')
    owner.close()
    guest.close()
