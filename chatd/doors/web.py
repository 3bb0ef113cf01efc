"""The web door: the chat page over HTTP and the chat over WebSocket, on one port.

C{ws://host:8080/} (seed 000's address) and C{ws://host:8080/ws} speak the chat; a plain GET
of C{/} returns the page. Without a subprotocol each event is one text frame holding the
same line the line door sends; with the subprotocol C{chatd.json} events are JSON objects
(see docs/protocol.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from chatd import text
from chatd.config import Config
from chatd.doors.output import STREAM_CHUNK, Output, Turn
from chatd.errors import CommandError
from chatd.events import Error, Event, History, Identity, Message, Notice, Presence, Rooms
from chatd.people import Session
from chatd.room import Room

log = Logger(namespace="chatd.doors.web")

JSON_PROTOCOL = "chatd.json"
# A resume answers with at most this many of the newest missed messages.
RESUME_LIMIT = 200
# Seconds a connection opened with ?hello=1 may take to send its hello before joining as a guest.
HELLO_WAIT = 5.0


def message_json(m: Message) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": m.id,
        "time": m.time,
        "from": m.sender,
        "text": m.text,
        "private": m.to is not None,
    }
    if m.to is not None:
        data["to"] = m.to
    if m.late:
        data["late"] = True
    data["room"] = m.room or None
    return data


def event_json(event: Event) -> dict[str, Any]:
    """The JSON form of an event; the same for every viewer."""
    if isinstance(event, Message):
        return {"type": "message", **message_json(event)}
    if isinstance(event, History):
        return {
            "type": "history",
            "reason": event.reason,
            "room": event.room,
            "messages": [message_json(m) for m in event.messages],
        }
    if isinstance(event, Presence):
        return {
            "type": "presence",
            "names": event.names,
            "room": event.room,
            "update": event.update,
        }
    if isinstance(event, Rooms):
        return {"type": "rooms", "rooms": event.names, "current": event.current, "room": None}
    if isinstance(event, Identity):
        return {
            "type": "identity",
            "name": event.name,
            "account": event.account,
            "token": event.token,
            "room": None,
        }
    return {"type": event.kind, "text": event.text, "room": getattr(event, "room", None)}


# A request is a flat object; this bounds what parsing a stranger's frame may cost (the
# parser recurses: thousands of levels would end in RecursionError, and the connection).
MAX_JSON_DEPTH = 16
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _nested_deeper(raw: str, limit: int) -> bool:
    """Whether the JSON text C{raw} opens more than C{limit} arrays/objects at once."""
    if raw.count("[") + raw.count("{") <= limit:
        return False  # the usual request: no need to look closer
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", raw)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


def _history_json(event: History, limit: int) -> Iterator[bytes]:
    """History events of about L{STREAM_CHUNK} bytes each, which together hold C{event}'s
    messages in order; one empty event when it has none."""
    head = json.dumps({"type": "history", "reason": event.reason, "room": event.room})
    head = head[:-1].encode()
    parts: list[bytes] = []
    size = 0
    for m in event.messages:
        part = json.dumps(message_json(text.cut_message(m, limit))).encode()
        parts.append(part)
        size += len(part)
        if size >= STREAM_CHUNK:
            yield head + b', "messages": [' + b", ".join(parts) + b"]}"
            parts, size = [], 0
    if parts or not event.messages:
        yield head + b', "messages": [' + b", ".join(parts) + b"]}"


class ChatWebSocket(WebSocketServerProtocol):
    """One WebSocket connection, in text-line or JSON mode."""

    factory: ChatWebSocketFactory
    session: Session | None = None
    output: Output | None = None  # from onOpen
    door = "ws"
    peer = "?"
    hello = False  # opened with ?hello=1: the Room hears of it after its first frame
    early: list[tuple[bytes, bool]] | None = None  # frames before the Room knew it
    hello_call: Any = None  # joins as a guest if no hello comes in time
    gone = False

    def onConnect(self, request: Any) -> str | None:
        self.peer = request.peer.split(":")[1] if request.peer.count(":") >= 2 else request.peer
        origin = request.headers.get("origin")
        if origin and not self.factory.origin_allowed(origin, request.headers.get("host", "")):
            log.warn(
                "refused WebSocket from {peer}: origin {origin}", peer=self.peer, origin=origin
            )
            raise ConnectionDeny(403, f"origin {origin} is not allowed")
        if JSON_PROTOCOL in request.protocols:
            self.door = "json"
            self.hello = "hello" in request.params
            return JSON_PROTOCOL
        return None

    def onOpen(self) -> None:
        room = self.factory.room
        # The HTTP channel registered itself as the producer; we own the connection now.
        self.transport.unregisterProducer()
        self.output = Output(
            self.transport, self.factory.turn, room.config.max_output_bytes, lambda: self.session
        )
        if self.hello:
            # The token comes in the first frame, not the URL: URLs end up in logs.
            self.early = []
            self.hello_call = room.clock.callLater(HELLO_WAIT, self._arrive, None)
        else:
            self.session = room.connect(self)

    def _arrive(self, token: str | None) -> None:
        """Join the Room, logged in already when the token is good; then act on the frames
        that came meanwhile."""
        self.hello_call = None

        def arrived(session: Session) -> None:
            if self.gone:
                self.factory.room.disconnect(session, "WebSocket closed while logging in")
                return
            self.session = session
            early, self.early = self.early or [], None
            for payload, binary in early:
                self.onMessage(payload, binary)

        def failed(failure: Any) -> None:
            log.failure("joining {peer} failed", failure, peer=self.peer)
            self.sendClose(1011, "the server could not let you in; reload to try again")

        self.factory.room.arrive(self, token).addCallbacks(arrived, failed)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.gone = True
        if self.hello_call is not None and self.hello_call.active():
            self.hello_call.cancel()
        if self.session is not None:
            self.factory.room.disconnect(self.session, f"WebSocket closed ({code})")
            self.session = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.early is not None:
            if self.hello_call is not None and self.hello_call.active():
                self.hello_call.cancel()
                token = _NOT_HELLO if isBinary else _hello_token(payload)
                if token is _NOT_HELLO:  # a guest, and this frame is for after it joined
                    self.early.append((payload, isBinary))
                self._arrive(token if isinstance(token, str) else None)
            else:
                self.early.append((payload, isBinary))
            return
        if self.session is None:
            return
        if isBinary:
            self._error("binary frames are not supported; send text frames of UTF-8")
            return
        line = payload.decode("utf-8")  # Autobahn has already failed invalid UTF-8 (1007)
        if self.door == "json":
            self._json_request(line)
            return
        self._lines(line)

    def _lines(self, line: str) -> None:
        for part in line.split("\n"):
            self.factory.room.receive(self.session, part)

    def _json_request(self, raw: str) -> None:
        """One request: typed text, or a resume asking for the messages missed while away."""
        if _nested_deeper(raw, MAX_JSON_DEPTH):
            self._error(f"JSON nested deeper than {MAX_JSON_DEPTH} levels; see docs/protocol.md")
            return
        try:
            request = json.loads(raw)
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            self._error('send a JSON object such as {"text": "hello"}; see docs/protocol.md')
        elif request.get("type") in ("register", "login"):
            name, password = request.get("name"), request.get("password")
            if isinstance(name, str) and isinstance(password, str):
                self._account(request["type"], name, password)
            else:
                self.deliver_answer(
                    Error(f'send {{"type": "{request["type"]}", "name": ..., "password": ...}}'),
                    request["type"],
                )
        elif request.get("type") == "hello":
            self._error(
                "hello is only the first frame of a connection opened at /ws?hello=1; "
                "send /auth <token> instead"
            )
        elif request.get("type") == "resume":
            after = request.get("after")
            if type(after) is not int or after < 0:
                self._error('resume needs a message id: {"type": "resume", "after": 42}')
            else:
                self._resume(after)
        elif isinstance(request.get("text"), str):
            room = request.get("room")
            if room is not None:
                try:
                    self.factory.room.switch(self.session, str(room))
                except CommandError as e:
                    self._error(str(e))
                    return
            self._lines(request["text"])
        else:
            self._error('send JSON such as {"text": "hello"}; see docs/protocol.md')

    def _account(self, kind: str, name: str, password: str) -> None:
        """C{register} or C{login} with the name and password as the page's form gave them."""
        session = self.session
        if session is None:
            return

        def done(told: str | None) -> None:
            if told is not None:
                self.deliver_answer(Notice(told), kind)

        def failed(failure: Any) -> None:
            if failure.check(CommandError):
                why = failure.getErrorMessage()
            else:
                log.failure("{kind} for {session} failed", failure, kind=kind, session=session)
                why = f"{kind} failed on the server; please try again later"
            self.deliver_answer(Error(why), kind)

        self.factory.room.account_request(session, kind, name, password).addCallbacks(done, failed)

    def deliver_answer(self, event: Event, request: str) -> None:
        """A notice or error answering one JSON request, naming it: the page shows it in
        the form that asked."""
        if self.session is not None and self.state == self.STATE_OPEN:
            answer = {**event_json(event), "request": request}
            prepared = self.factory.prepareMessage(json.dumps(answer).encode("utf-8"))
            self.output.write(prepared.payloadHybi)

    def _resume(self, after: int) -> None:
        """Send the public messages stored after id C{after}, as one history event."""
        room = self.factory.room
        if self.session is None:
            return
        names = [c.name for c in room.rooms.joined(self.session.user)]
        for name in names:
            self._resume_room(after, name)

    def _resume_room(self, after: int, name: str) -> None:
        room = self.factory.room
        d = defer.maybeDeferred(room.history_after, after, RESUME_LIMIT, name)

        def send(messages: list[Message]) -> None:
            if self.session is not None:
                self.deliver(History(messages, "missed", name))

        def failed(failure: Any) -> None:
            log.failure("resume after {after} failed", failure, after=after)
            if self.session is not None:
                self._error("the messages you missed could not be fetched; reload the page")

        d.addCallbacks(send, failed)

    def _error(self, message: str) -> None:
        self.deliver(Error(message))

    def deliver(self, event: Event) -> None:
        # Called once per recipient of every event: the usual case is one look-up of the
        # frame prepared for everyone (its bytes: L{ChatWebSocketFactory.line_frame}).
        kind = type(event)
        if kind is History:
            if self.state == self.STATE_OPEN:
                self.output.stream(self._history_frames(event))
            return
        factory = self.factory
        if self.door == "json":
            if kind is Message and event.to is not None:
                # Per viewer: whether it is this device's person's own (the page's "to Bob").
                data = {**event_json(event), "mine": bool(event.mine(self.session))}
                frame = factory.prepareMessage(json.dumps(data).encode("utf-8")).payloadHybi
            else:
                frame = event.wire.get("json")
                if frame is None:
                    frame = event.rendered("json", factory.json_frame)
        elif kind is Message and event.to is None:
            session = self.session
            if event.origin is session:
                return  # text doors do not echo a public line to its sender
            room = event.room
            if session is None or room == session.room or not room or session.room is None:
                frame = event.wire.get("ws")
                if frame is None:
                    frame = event.rendered("ws", factory.line_frame)
            else:  # text.elsewhere: another room than the viewer's current one
                frame = event.rendered("ws+", factory.elsewhere_frame)
        elif kind is Message:
            viewer = self.session.user.name if self.session else None
            rendered = text.line(event, viewer, None, event.mine(self.session))
            frame = factory.prepareMessage(rendered.encode("utf-8")).payloadHybi
        elif text.elsewhere(event, self.session.room if self.session else None):
            frame = event.rendered("ws+", factory.elsewhere_frame)
        else:
            frame = event.wire.get("ws")
            if frame is None:
                frame = event.rendered("ws", factory.line_frame)
        if frame and self.state == self.STATE_OPEN:
            self.output.write(frame)

    def _history_frames(self, event: History) -> Iterator[bytes]:
        """History as several frames the client reads one after the other (one history
        event of a few messages each in JSON, a few lines each in text), each message within
        the message size limit whatever the store holds."""
        limit = self.factory.room.config.max_message_bytes
        if self.door == "json":
            pieces: Iterator[bytes] = _history_json(event, limit)
        else:
            viewer = self.session.user.name if self.session else None
            lines = text.history_lines(event, viewer, limit, self.session)
            pieces = text.chunks((line.encode("utf-8") + b"\n" for line in lines), STREAM_CHUNK)
        for piece in pieces:
            yield self.factory.prepareMessage(piece.removesuffix(b"\n")).payloadHybi

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Autobahn writes its own frames (pong, close) straight to the transport: the
        # messages held for the end of this turn go first.
        if self.output is not None:
            self.output.flush()
        super().sendData(data, sync, chopsize)

    def _closeConnection(self, abort: bool = False) -> None:
        # Autobahn closes the transport here, whoever started the close.
        if self.output is not None:
            self.output.finish()
        super()._closeConnection(abort)

    def close(self, reason: str) -> None:
        self.sendClose(1000, reason)


_NOT_HELLO: Any = object()


def _hello_token(payload: bytes) -> Any:
    """The token of a hello frame (None: no token), or _NOT_HELLO when it is not one."""
    try:
        request = json.loads(payload.decode("utf-8"))
    except ValueError:
        return _NOT_HELLO
    if not isinstance(request, dict) or request.get("type") != "hello":
        return _NOT_HELLO
    return request.get("token")


class ChatWebSocketFactory(WebSocketServerFactory):
    protocol = ChatWebSocket

    def __init__(self, room: Room) -> None:
        super().__init__(server=None)  # no "Server: AutobahnPython/<version>" header
        self.room = room
        self.turn = Turn(room.clock)
        self.reconfigure(room.config)

    def reconfigure(self, config: Config) -> None:
        """Origins and sizes from C{config}; a reload changes them for new connections."""
        self.allowed_origins = set(config.allowed_origins.split())
        self.setProtocolOptions(
            maxFramePayloadSize=config.max_ws_message_bytes,
            maxMessagePayloadSize=config.max_ws_message_bytes,
            openHandshakeTimeout=config.handshake_timeout,
            autoPingInterval=30,
            autoPingTimeout=30,
            failByDrop=False,  # say why (1009 too big, 1007 bad UTF-8) before closing
        )

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's own origin, the configured ones, or any with C{*}."""
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        return urlsplit(origin).netloc.lower() == host.lower()

    # An event's frame is prepared once for all recipients; what is kept is its bytes
    # (b"": nothing to send), so a delivery needs no attribute of a prepared message.

    def line_frame(self, event: Event) -> bytes:
        rendered = text.line(event)
        return self.prepareMessage(rendered.encode("utf-8")).payloadHybi if rendered else b""

    def elsewhere_frame(self, event: Event) -> bytes:
        """An event of a room other than the viewer's current one: its lines prefixed."""
        return self.prepareMessage(text.line(event, None, "").encode("utf-8")).payloadHybi

    def json_frame(self, event: Event) -> bytes:
        return self.prepareMessage(json.dumps(event_json(event)).encode("utf-8")).payloadHybi


class Root(Resource):
    """C{/}: the page for a browser, the chat for a WebSocket client."""

    def __init__(
        self, websocket: WebSocketResource, static: Resource, health: Resource | None = None
    ) -> None:
        super().__init__()
        self.websocket = websocket
        self.static = static
        self.putChild(b"ws", websocket)
        self.putChild(b"static", static)
        if health is not None:
            self.putChild(b"healthz", health)  # for a load balancer checking this port

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self
        return super().getChild(path, request)

    def render(self, request: Any) -> Any:
        upgrade = (request.getHeader("upgrade") or "").lower()
        if upgrade == "websocket":
            return self.websocket.render(request)
        return self.static.getChild(b"index.html", request).render(request)


# The page loads only chatd's own files and talks only to its own WebSocket; nothing may
# frame it (clickjacking). connect-src 'self' covers ws:// and wss:// to the same host.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    b"content-security-policy": CONTENT_SECURITY_POLICY.encode("ascii"),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",  # frame-ancestors, for browsers without CSP level 2
    b"referrer-policy": b"no-referrer",
}


class ChatRequest(Request):
    """A request answered with the security headers, and no C{Server} header: twisted.web
    would name itself and its version, which tells an attacker what to try."""

    def render(self, resrc: Any) -> None:
        self.responseHeaders.removeHeader(b"server")
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().render(resrc)


class ChatSite(Site):
    """twisted.web's Site, with bounds on the plain-HTTP part of a connection.

    Site's own timeout is an idle timeout: a client sending a byte every few seconds would
    hold its connection, and a file descriptor, for ever without ever upgrading. Here every
    connection is upgraded to a WebSocket within C{timeout} seconds, or closed; and one
    address holds at most C{per_address} connections not upgraded yet (0: no cap), as the
    flood rules cap the chat connections themselves.
    """

    requestFactory = ChatRequest

    def __init__(self, resource: Resource, clock: Any, timeout: float, per_address: int):
        super().__init__(resource, timeout=timeout)
        self.clock = clock
        self.per_address = per_address
        self._plain: dict[str, list[tuple[Any, Any]]] = {}  # address -> (channel, transport)
        self.chat: ChatWebSocketFactory | None = None  # set by make_site

    def log(self, request: Any) -> None:
        """The access log, without a line per health check (a load balancer asks often)."""
        if request.path != b"/healthz":
            super().log(request)

    def reconfigure(self, config: Config) -> None:
        """A reload: the cap and the WebSocket settings apply to new connections."""
        self.per_address = config.connections_per_address
        self.chat.reconfigure(config)

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        make_connection = channel.makeConnection

        # The channel hides its transport: catch it as the connection is made.
        def made(transport: Any) -> None:
            make_connection(transport)
            host = self._count(channel, transport)
            self.clock.callLater(self.timeOut, self._deadline, host, channel, transport)

        channel.makeConnection = made
        return channel

    def _count(self, channel: Any, transport: Any) -> str | None:
        """The address the connection is counted under; None when not counted (no cap, or
        over it: then it is closed)."""
        if not self.per_address:
            return None
        host = getattr(transport.getPeer(), "host", "?")
        plain = [pair for pair in self._plain.get(host, ()) if self._still_plain(*pair)]
        self._plain[host] = plain
        if len(plain) >= self.per_address:
            log.info("refused {peer}: {n} HTTP connections already", peer=host, n=len(plain))
            transport.loseConnection()
            return None
        plain.append((channel, transport))
        return host

    @staticmethod
    def _still_plain(channel: Any, transport: Any) -> bool:
        # After an upgrade Autobahn's protocol owns the transport (TLS: the wrapped one).
        owner = getattr(transport, "wrappedProtocol", None) or getattr(transport, "protocol", None)
        return bool(transport.connected) and owner is channel

    def _deadline(self, host: str | None, channel: Any, transport: Any) -> None:
        plain = self._plain.get(host, []) if host is not None else []
        if (channel, transport) in plain:
            plain.remove((channel, transport))
            if not plain:
                del self._plain[host]
        if self._still_plain(channel, transport):
            log.info("closed an HTTP connection not upgraded within {t} s", t=self.timeOut)
            transport.loseConnection()


def make_site(room: Room, health: Resource | None = None) -> ChatSite:
    """The web door's site; C{health} is served at C{/healthz} when given."""
    static = File(str(files("chatd") / "static"), defaultType="text/plain; charset=utf-8")
    static.contentTypes.update(
        {
            ".js": "text/javascript; charset=utf-8",
            ".html": "text/html; charset=utf-8",
            ".svg": "image/svg+xml",
        }
    )
    chat = ChatWebSocketFactory(room)
    config = room.config
    site = ChatSite(
        Root(WebSocketResource(chat), static, health),
        room.clock,
        config.handshake_timeout,
        config.connections_per_address,
    )
    site.chat = chat
    site.displayTracebacks = False
    return site
