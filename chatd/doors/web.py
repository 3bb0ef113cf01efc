"""The web door: the chat page over HTTP and the chat over WebSocket, on one port.

C{ws://host:8080/} (seed 000's address) and C{ws://host:8080/ws} speak the chat; a plain GET
of C{/} returns the page. Without a subprotocol each event is one text frame holding the
same line the line door sends; with the subprotocol C{chatd.json} events are JSON objects
(see docs/protocol.md).

A connection's first request decides who reads it (L{Doorway}): a WebSocket upgrade goes to
Autobahn, which parses it, and anything else to twisted.web; no request is parsed twice.
"""

from __future__ import annotations

import inspect
import json
import re
from collections import deque
from collections.abc import Iterator
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from chatd import text
from chatd.config import Config
from chatd.doors.output import STREAM_CHUNK, Output, Turn
from chatd.errors import CommandError
from chatd.events import Error, Event, History, Identity, Message, Notice, Presence, Rooms
from chatd.members import Kept, deliver
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


# What Autobahn keeps per connection only for the opening handshake (or its test suite):
# dropped once the connection is open. Nothing reads them later.
_HANDSHAKE_ONLY = (
    "http_headers", "http_request_data", "http_response_data", "http_status_line",
    "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
    "websocket_origin", "websocket_protocols", "websocket_extensions", "_wskey",
)  # fmt: skip

# Autobahn's per-connection flags and timers, as its _connectionMade sets them. While one
# still has this value it is read from the class, not kept in each connection's __dict__;
# Autobahn setting it later (a close) makes it the connection's own again.
_AT_REST: dict[str, Any] = {
    "_perMessageCompress": None, "trackedTimings": None, "triggered": False,
    "wasMaxFramePayloadSizeExceeded": False, "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False, "failedByMe": False, "droppedByMe": False, "wasClean": False,
    "wasNotCleanReason": None, "wasServerConnectionDropTimeout": False,
    "wasOpenHandshakeTimeout": False, "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False, "localCloseCode": None,
    "localCloseReason": None, "remoteCloseCode": None, "remoteCloseReason": None,
    "openHandshakeTimeoutCall": None, "closeHandshakeTimeoutCall": None,
    "autoPingTimeoutCall": None, "autoPingPending": None, "autoPingPendingSent": None,
    "websocket_protocol_in_use": None,
    "inside_message": False, "current_frame": None,
}  # fmt: skip

# Autobahn counts each connection's traffic; chatd never reads the counts, so every
# connection adds to this one object instead of keeping its own.
_UNREAD_STATS = TrafficStats()


class ChatWebSocket(WebSocketServerProtocol):
    """One WebSocket connection, in text-line or JSON mode.

    Thousands of these stay open and idle, so what one keeps is kept small: Autobahn's
    options live on the factory's protocol class (L{ChatWebSocketFactory.reconfigure}), its
    handshake leftovers and at-rest flags are dropped once the connection is open
    (L{_settle}), and twisted.web never sees the connection (L{Doorway}).
    """

    factory: ChatWebSocketFactory
    session: Session | None = None
    output: Output | None = None  # from the start of the connection
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

    @property
    def send_queue(self) -> Any:  # type: ignore[override]
        """Autobahn's queue for synchronous or chopped sends, which chatd never makes: made
        only when one is (L{sendData}); until then every connection reads the same empty
        one."""
        return self.__dict__.get("_send_queue", _NO_SENDS)

    @send_queue.setter
    def send_queue(self, queue: deque[Any]) -> None:
        if queue:
            self.__dict__["_send_queue"] = queue

    def _connectionMade(self) -> None:
        super()._connectionMade()
        self.trafficStats = _UNREAD_STATS
        self.output = Output(
            self.transport,
            self.factory.turn,
            self.factory.room.config.max_output_bytes,
            self._who,
        )

    def _settle(self) -> None:
        """Once open: forget the handshake, leave at-rest flags to the class, and keep the
        rest in a dict sized for what is left (a dict never shrinks by itself)."""
        attributes = self.__dict__
        for name in _HANDSHAKE_ONLY:
            attributes.pop(name, None)
        for name, value in _AT_REST.items():
            if name in attributes and attributes[name] == value:
                del attributes[name]
        self.__dict__ = dict(attributes.items())

    def onOpen(self) -> None:
        self._settle()
        room = self.factory.room
        if self.hello:
            # The token comes in the first frame, not the URL: URLs end up in logs.
            self.early = []
            self.hello_call = room.clock.callLater(HELLO_WAIT, self._arrive, None)
        else:
            self.session = room.connect(self)

    def _who(self) -> Session | None:
        """Who this connection is, for the log (a method, not a closure per connection)."""
        return self.session

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

    @property
    def deliver_all(self) -> Any:
        """This door's fan-out (L{chatd.people.Client.deliver_all}): its factory's, one for
        the page (JSON) and one for text, so each fan-out is one kind of frame."""
        factory = self.factory
        return factory.deliver_pages if self.door == "json" else factory.deliver_all

    def deliver(self, event: Event) -> None:
        # One recipient: an answer, a whisper, a history (a room's fan-out goes through
        # L{ChatWebSocketFactory.deliver_all} and L{ChatWebSocketFactory.deliver_pages}).
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
        output = self.output
        if output is None:
            super().sendData(data, sync, chopsize)
            return
        if self.state == self.STATE_CONNECTING and not (sync or chopsize):
            # The answer to the opening handshake: held for the end of the turn, so that
            # it goes out with the greeting in one send() (or first, before a close).
            output.write(data)
            self.factory.turn.writes -= 1  # not an event
            return
        # Autobahn writes its own frames (pong, close) straight to the transport: the
        # messages held for the end of this turn go first.
        output.flush()
        if (sync or chopsize) and "_send_queue" not in self.__dict__:
            self.__dict__["_send_queue"] = deque()
        super().sendData(data, sync, chopsize)

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        opened = self.state == self.STATE_OPEN
        super().sendCloseFrame(code, reasonUtf8, isReply)
        if opened and self.state != self.STATE_OPEN:
            self.factory.closings += 1  # no more frames for it: the kept fan-outs are stale

    def _closeConnection(self, abort: bool = False) -> None:
        # Autobahn closes the transport here, whoever started the close.
        self.factory.closings += 1
        if self.output is not None:
            self.output.finish()
        super()._closeConnection(abort)

    def close(self, reason: str) -> None:
        self.sendClose(1000, reason)


for _name, _value in _AT_REST.items():
    setattr(ChatWebSocket, _name, _value)

_NOT_HELLO: Any = object()
_NO_SENDS: Any = ()  # empty; a send that would queue makes a deque of its own first


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
        # How many connections stopped being open (a close frame sent, or closed): the
        # fan-outs' kept lists of open connections (L{_open_in}) are stale when it moved.
        self.closings = 0
        self._texts = Kept()  # the text fan-out's (here, there) for the last room
        self._pages = Kept()  # the page fan-out's open connections
        self.reconfigure(room.config)

    def reconfigure(self, config: Config) -> None:
        """Origins and sizes from C{config}; a reload changes them for new connections."""
        self.allowed_origins = set(config.allowed_origins.split())
        self.setProtocolOptions(
            maxFramePayloadSize=config.max_ws_message_bytes,
            maxMessagePayloadSize=config.max_ws_message_bytes,
            # No timer of Autobahn's own: it is handed a whole request head (L{Doorway}),
            # so its handshake never waits for the client; the site's deadline covers the
            # wait for the head.
            openHandshakeTimeout=0,
            autoPingInterval=30,
            autoPingTimeout=30,
            failByDrop=False,  # say why (1009 too big, 1007 bad UTF-8) before closing
        )
        # Autobahn copies every option into each connection unless its class has it
        # already: one class per configuration keeps them there, once. With them there,
        # its list of options to copy is empty, which also spares each connection the
        # pretty-printed debug dump of them Autobahn builds (a sixth of a connect's CPU).
        # (A function among them, such as perMessageCompressionAccept, must stay a plain
        # function there, not become a method of each connection.)
        options: dict[str, Any] = {}
        for name in ChatWebSocket.CONFIG_ATTRS:
            value = getattr(self, name)
            options[name] = staticmethod(value) if inspect.isfunction(value) else value
        options["CONFIG_ATTRS"] = ()
        self.protocol = type("ChatWebSocket", (ChatWebSocket,), options)

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's own origin, the configured ones, or any with C{*}."""
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        return urlsplit(origin).netloc.lower() == host.lower()

    def deliver_all(self, sessions: tuple[Session, ...], event: Event) -> None:
        """L{ChatWebSocket.deliver} to many of this door's text sessions at once: a fan-out.

        Each frame is looked up once, and who gets which is kept between messages
        (L{_open_in}), as on the line door (L{chatd.doors.line.LineFactory.deliver_all}).
        What differs per viewer (a history, a whisper's "mine") goes one by one.
        """
        sharing = text.sharing(event)
        if sharing is None:  # per viewer
            deliver(sessions, event)
            return
        origin, room = sharing
        here, there = self._texts.get(sessions, room, self._stamp(), self._open_in)
        if origin is not None and (room or origin.room == room):  # no echo on text
            output = getattr(origin.client, "output", None)
            if output in here:  # unless it has left, or is on another door
                here = here.copy()  # the kept lists stay whole
                here.remove(output)
            elif output in there:
                there = there.copy()
                there.remove(output)
        if there:
            frame = event.rendered("ws+", self.elsewhere_frame)
            if frame:
                self.turn.write_all(there, frame)
        frame = event.rendered("ws", self.line_frame)
        if frame and here:
            self.turn.write_all(here, frame)

    def deliver_pages(self, sessions: tuple[Session, ...], event: Event) -> None:
        """L{ChatWebSocket.deliver} to many of this door's JSON sessions (the page): one
        frame for all, the sender's own line included."""
        if text.sharing(event) is None:  # per viewer
            deliver(sessions, event)
            return
        pages = self._pages.get(sessions, None, self._stamp(), self._open_in)[0]
        frame = event.rendered("json", self.json_frame)
        if pages and frame:
            self.turn.write_all(pages, frame)

    def _stamp(self) -> tuple[int, int]:
        """What a kept fan-out (L{Kept}) of this door goes stale with: someone changing
        rooms, or a connection no longer open."""
        return Session.moves, self.closings

    @staticmethod
    def _open_in(
        sessions: tuple[Session, ...], room: str | None
    ) -> tuple[list[Output], list[Output]]:
        """The outputs of the open connections of C{sessions}: those whose current room is
        C{room} (or who have none; all of them for None), and those elsewhere, whose lines
        are prefixed."""
        opened = ChatWebSocket.STATE_OPEN
        here: list[Output] = []
        there: list[Output] = []
        for s in sessions:
            c = s.client
            if c.state == opened:
                if not room or s.room == room or s.room is None:
                    here.append(c.output)
                else:  # text.elsewhere: another room than the viewer's current one
                    there.append(c.output)
        return here, there

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


class NotFirst(Resource):
    """The chat's addresses as twisted.web sees them: only when a WebSocket was not asked
    for by a connection's first request (L{Doorway}), or not asked for at all (a browser
    opening C{/ws})."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(426)
        request.setHeader(b"upgrade", b"websocket")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (
            b"This address is the chat's WebSocket: open it with the first request of a new "
            b"connection (GET /ws HTTP/1.1 with Upgrade: websocket). The chat page is at /.\n"
        )


class Root(Resource):
    """C{/}: the page, its files and the health check, served by twisted.web."""

    def __init__(self, static: Resource, health: Resource | None = None) -> None:
        super().__init__()
        self.static = static
        self.chat = NotFirst()
        self.putChild(b"ws", self.chat)
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
            return self.chat.render(request)
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
    """twisted.web's Site behind a L{Doorway}, with bounds on the plain-HTTP part of a
    connection.

    Site's own timeout is an idle timeout: a client sending a byte every few seconds would
    hold its connection, and a file descriptor, for ever without ever upgrading. Here every
    connection is upgraded to a WebSocket within C{timeout} seconds, or closed; and one
    address holds at most C{per_address} connections not upgraded yet (0: no cap), as the
    flood rules cap the chat connections themselves.
    """

    requestFactory = ChatRequest

    def __init__(
        self,
        resource: Resource,
        chat: ChatWebSocketFactory,
        clock: Any,
        timeout: float,
        per_address: int,
    ):
        super().__init__(resource, timeout=timeout)
        self.chat = chat
        self.clock = clock
        self.per_address = per_address
        # Connections not upgraded yet: address -> their transports; transport -> the
        # address it is counted under (None: not counted) and its deadline.
        self._plain: dict[str, set[Any]] = {}
        self._waiting: dict[Any, tuple[str | None, Any]] = {}

    def log(self, request: Any) -> None:
        """The access log, without a line per health check (a load balancer asks often)."""
        if request.path != b"/healthz":
            super().log(request)

    def reconfigure(self, config: Config) -> None:
        """A reload: the cap and the WebSocket settings apply to new connections."""
        self.per_address = config.connections_per_address
        self.chat.reconfigure(config)

    def buildProtocol(self, addr: Any) -> Doorway:
        return Doorway(self, addr)

    def http_channel(self, addr: Any) -> Any:
        """twisted.web's protocol for a connection that is not a WebSocket (yet)."""
        return super().buildProtocol(addr)

    def arrived(self, transport: Any) -> None:
        """A new connection: counted, and closed unless upgraded in time."""
        host = self._count(transport)
        if transport.connected:
            call = self.clock.callLater(self.timeOut, self._deadline, transport)
            self._waiting[transport] = (host, call)

    def _count(self, transport: Any) -> str | None:
        """The address the connection is counted under; None when not counted (no cap, or
        over it: then it is closed)."""
        if not self.per_address:
            return None
        host = getattr(transport.getPeer(), "host", "?")
        plain = {t for t in self._plain.get(host, ()) if t.connected}
        self._plain[host] = plain
        if len(plain) >= self.per_address:
            log.info("refused {peer}: {n} HTTP connections already", peer=host, n=len(plain))
            transport.loseConnection()
            return None
        plain.add(transport)
        return host

    def _forget(self, transport: Any) -> Any:
        """Stop counting C{transport} as plain HTTP; its deadline call, if it had one."""
        host, call = self._waiting.pop(transport, (None, None))
        plain = self._plain.get(host) if host is not None else None
        if plain is not None:
            plain.discard(transport)
            if not plain:
                del self._plain[host]
        return call

    def settled(self, transport: Any) -> None:
        """C{transport} is a WebSocket now, or gone before it said what it is: it needs no
        deadline, and counts no more."""
        call = self._forget(transport)
        if call is not None and call.active():
            call.cancel()

    def _deadline(self, transport: Any) -> None:
        if transport not in self._waiting:
            return
        self._forget(transport)
        if transport.connected:
            log.info("closed an HTTP connection not upgraded within {t} s", t=self.timeOut)
            transport.loseConnection()


# The request line of a WebSocket upgrade to the chat, as twisted.web would route it: C{/}
# or C{/ws} (and below), any number of leading slashes, any query.
_CHAT_REQUEST = re.compile(rb"GET /+(?:ws(?:/\S*)?)?(?:\?\S*)? HTTP/1\.1\r\n")
_UPGRADE_WEBSOCKET = re.compile(rb"\r\nupgrade:[^\r\n]*\bwebsocket\b", re.IGNORECASE)
# The longest request head a doorway waits for; twisted.web refuses what is longer.
MAX_HEAD = 16384


def is_chat_upgrade(head: bytes) -> bool:
    """Whether the request head C{head} (up to its blank line) asks for the chat's
    WebSocket; Autobahn checks the rest of the handshake."""
    return _CHAT_REQUEST.match(head) is not None and _UPGRADE_WEBSOCKET.search(head) is not None


class Doorway(Protocol):
    """A web connection until its first request head has arrived, which decides who reads
    it: Autobahn for a WebSocket upgrade, twisted.web for the rest. The bytes read so far go
    to the one chosen, which takes the connection's place, so each request is parsed once:
    twisted.web would parse an upgrade and then Autobahn again, about half of a WebSocket
    connect's CPU. Meanwhile the site counts the connection and keeps its deadline.
    """

    def __init__(self, site: ChatSite, addr: Any) -> None:
        self.site = site
        self.addr = addr
        self.head = b""

    def connectionMade(self) -> None:
        self.site.arrived(self.transport)

    def dataReceived(self, data: bytes) -> None:
        seen = len(self.head)  # searched already: a head in tiny pieces costs no more
        head = self.head + data if seen else data
        end = head.find(b"\r\n\r\n", max(0, seen - 3))
        if end < 0 and len(head) < MAX_HEAD:
            self.head = head
            return
        self.head = b""
        site, transport = self.site, self.transport
        if end >= 0 and is_chat_upgrade(head[: end + 2]):
            site.settled(transport)
            protocol = site.chat.buildProtocol(self.addr)
        else:
            protocol = site.http_channel(self.addr)
        # The transport calls its protocol: from now on the one chosen (under TLS or the
        # PROXY protocol, the wrapper's wrapped protocol).
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(head)

    def connectionLost(self, reason: Any = None) -> None:
        self.site.settled(self.transport)


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
    config = room.config
    site = ChatSite(
        Root(static, health),
        ChatWebSocketFactory(room),
        room.clock,
        config.handshake_timeout,
        config.connections_per_address,
    )
    site.displayTracebacks = False
    return site
