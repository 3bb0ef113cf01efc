"""The minechat doors: a read-only stream (port 5000) and a token-login write port (5050).

minechat clients compare the server's lines character by character, so the byte strings
below are the protocol (the README's "minechat clients" section): never reword them.
Neither port has a line for errors, notices or whispers; the write port logs what it cannot
show, and the read port shows public messages only. The exceptions are what would otherwise
be a silent hang-up or a message lost without a word: a login the database could not check,
and a message the default room refuses, each get one plain C{Error: ...} line.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import text as textrules
from chatd.doors.lines import LineSplitter
from chatd.doors.output import Output, Turn
from chatd.errors import CommandError, UsageError
from chatd.events import Error, Event, Message
from chatd.people import Session
from chatd.room import Room
from chatd.store import UNAVAILABLE, StoreUnavailable

log = Logger(namespace="chatd.doors.minechat")

GREETING = b"Hello %username%! Enter your personal hash or leave it empty to create new account.\n"
ASK_NICKNAME = b"Enter preferred nickname below:\n"
UNKNOWN = b"null\n"
WELCOME = b"Welcome to chat! Post your message below. End it with an empty line.\n"
SENT = b"Message send. Write more, end message with an empty line.\n"

# The lines of one multi-line minechat message become one chat message, so it is one
# message for rate limits and one line on every door: "first / second".
LINE_JOINER = " / "


def _peer(transport: Any) -> str:
    return getattr(transport.getPeer(), "host", "?")


def _stream_line(message: Message) -> bytes:
    text = message.text.replace("\n", LINE_JOINER)  # one message is always one line
    return f"{message.sender}: {text}\n".encode()


class MinechatReadDoor(Protocol):
    """A read-port listener: not a chat user, it hears every public message and nothing else."""

    door = "minechat-read"
    factory: MinechatReadFactory

    def connectionMade(self) -> None:
        self.peer = _peer(self.transport)
        room = self.factory.room
        self.output = Output(
            self.transport,
            self.factory.turn,
            room.config.max_output_bytes,
            lambda: f"minechat listener {self.peer}",
        )
        room.listen(self)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.room.unlisten(self)

    def dataReceived(self, data: bytes) -> None:
        """The read port is read-only: what a listener sends is ignored."""

    def deliver(self, event: Event) -> None:
        if type(event) is Message and event.to is None:
            data = event.rendered(b"minechat", _stream_line)
            self.output.write(data)

    def close(self, reason: str) -> None:
        log.info("closing minechat listener {peer}: {reason}", peer=self.peer, reason=reason)
        self.output.finish()
        self.transport.loseConnection()


class MinechatWriteDoor(Protocol):
    """A minechat writer: greeting, token login or registration, then messages.

    Clients pipeline (C{token\\n\\nhello\\n\\n} at once) and may close right after writing,
    while a login is still being looked up: lines wait in C{_lines} until it is done and are
    then handled in order, and the session leaves only once every received line is handled.
    A connection joins the room as a guest, like on every door (and under the same flood
    caps), and takes its account's name at login.
    """

    door = "minechat"
    factory: MinechatWriteFactory
    session: Session

    def connectionMade(self) -> None:
        self.peer = _peer(self.transport)
        self.max_line = self.factory.room.config.max_line_bytes
        self._splitter = LineSplitter(
            self.max_line,
            lambda line: self._lines.append(self._decode(line)),
            self._too_long,
        )
        self._lines: deque[str] = deque()
        self._step = self._token  # what the next line means
        self._pending: Deferred[Any] | None = None  # a login or registration in flight
        self._message: list[str] = []
        self._size = 0  # UTF-8 bytes of the message so far, joined
        self._gone = False
        self.transport.write(GREETING)
        self.session = self.factory.room.connect(self)

    def connectionLost(self, reason: object = None) -> None:
        self._gone = True
        self._advance()

    def dataReceived(self, data: bytes) -> None:
        self._splitter.feed(data)
        self._advance()

    def _too_long(self) -> None:
        log.warn(
            "{peer}: minechat line over {limit} bytes skipped", peer=self.peer, limit=self.max_line
        )

    def _decode(self, line: bytes) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            log.info("{peer}: minechat line not valid UTF-8; replaced", peer=self.peer)
            return line.decode("utf-8", "replace")

    def _advance(self) -> None:
        """Handle waiting lines in order; pause while a login is in flight."""
        while self._lines and self._pending is None and not self.transport.disconnecting:
            result = self._step(self._lines.popleft())
            if isinstance(result, Deferred):
                self._pending = result
                result.addBoth(self._resume)  # may run at once
        if self._gone and self._pending is None:
            self.factory.room.disconnect(self.session, "connection closed")

    def _resume(self, result: object) -> None:
        self._pending = None
        if isinstance(result, Failure):
            self._not_logged_in(result)
        self._advance()

    def _not_logged_in(self, failure: Failure) -> None:
        """A login or registration that could not be done: the writer reads why, then the
        connection closes. C{null} would not do: it says the token is unknown, and the
        client would make a new account. A database outage is one log line here (the store
        logs the outage itself once); anything else is a fault, with its traceback."""
        if failure.check(StoreUnavailable):
            why = UNAVAILABLE
            log.info("{peer}: minechat login not done: {e}", peer=self.peer, e=failure.value)
        else:
            why = "the login failed on the server; please try again later"
            log.failure("minechat login for {peer} failed", failure, peer=self.peer)
        self.transport.write(_error(why))
        self._lines.clear()
        self.transport.loseConnection()

    # -- steps: each handles one line and may return a Deferred that holds the next ones ----

    def _token(self, line: str) -> Deferred[None] | None:
        token = line.strip()
        if not token:
            return self._ask_nickname()
        d = self.factory.room.login_with_token(self.session, token)
        d.addCallbacks(self._logged_in, self._token_refused, callbackArgs=(token,))
        return d

    def _token_refused(self, failure: Failure) -> None:
        """The token was not checked (the Room refused it): answer as for an unknown token.

        The protocol has no error line; C{null} is what minechat clients expect for a token
        that does not log in (they report it, or register a new account), where a silent
        hang-up crashes some of them. The reason is logged.
        """
        failure.trap(CommandError)
        log.info("{peer}: minechat token refused: {why}", peer=self.peer, why=failure.value)
        self._logged_in(None, "")

    def _logged_in(self, name: str | None, token: str) -> None:
        if name is None:
            self.transport.write(UNKNOWN)
            self._ask_nickname()
        else:
            self._welcome(name, token)

    def _ask_nickname(self) -> None:
        self.transport.write(ASK_NICKNAME)
        self._step = self._nickname

    def _nickname(self, line: str) -> Deferred[None]:
        """Any line is a nickname: the Room makes it a free, valid name (or picks one)."""
        nickname = line.strip()
        d = self.factory.room.register_account(self.session, nickname)
        d.addCallbacks(lambda given: self._welcome(*given), self._refused, errbackArgs=(nickname,))
        return d

    def _refused(self, failure: Failure, nickname: str) -> None:
        """The name was taken meanwhile: C{null}, as for a bad token, and ask again."""
        failure.trap(CommandError, UsageError)
        log.info(
            "{peer}: minechat nickname {nickname!r} refused: {why}",
            peer=self.peer,
            nickname=nickname,
            why=failure.value,
        )
        self.transport.write(UNKNOWN)
        self._ask_nickname()

    def _welcome(self, name: str, token: str) -> None:
        account = json.dumps({"nickname": name, "account_hash": token})
        self.transport.write(account.encode() + b"\n" + WELCOME)
        self._step = self._chat

    def _chat(self, line: str) -> None:
        if self.session.closing:
            return  # said goodbye (/exit, a shutdown): nothing more is sent, so no "sent"
        if line.strip():
            self._add(line)
            return
        message, self._message = self._message, []
        size, self._size = self._size, 0
        limit = self.factory.room.config.max_message_bytes
        if limit and size > limit:
            # No line for errors: logged, and the usual answer so the client goes on.
            log.info(
                "minechat writer {peer} not shown: {why}",
                peer=self.peer,
                why=textrules.over_limit(size, limit),
            )
        else:
            text = LINE_JOINER.join(message)
            if text:
                try:
                    self._in_default_room()
                except CommandError as e:
                    log.info("minechat writer {peer} not shown: {why}", peer=self.peer, why=e)
                    self.transport.write(_error(f"not sent: {e}"))
                    return
                self.factory.room.receive(self.session, text)
        self.transport.write(SENT)

    def _in_default_room(self) -> None:
        """minechat has no rooms: the write port posts to the default room, the one the read
        port streams, whatever room the account's other devices talk in. An account that
        left it elsewhere is back in it (one talks in a room one is in), as after /join."""
        room = self.factory.room
        name = room.config.default_room
        try:
            room.switch(self.session, name)
        except CommandError:
            room.join(self.session, name)

    def _add(self, line: str) -> None:
        """One more line of the message; past the size limit only its size is counted, so
        one message of any length costs no more memory than the limit."""
        joiner = len(LINE_JOINER) if self._size else 0
        self._size += joiner + textrules.utf8_size(line)
        limit = self.factory.room.config.max_message_bytes
        if not limit or self._size <= limit:
            self._message.append(line)
        else:
            self._message.clear()

    # -- what the Room sends: the write port has no line for any of it ---------------------

    def deliver(self, event: Event) -> None:
        if type(event) is Error:
            log.info("minechat writer {peer} not shown: {text}", peer=self.peer, text=event.text)

    def close(self, reason: str) -> None:
        log.info("closing minechat writer {peer}: {reason}", peer=self.peer, reason=reason)
        self.transport.loseConnection()


def _error(why: str) -> bytes:
    return f"Error: {why}\n".encode()


class MinechatReadFactory(Factory):
    protocol = MinechatReadDoor

    def __init__(self, room: Room) -> None:
        self.room = room
        self.turn = Turn(room.clock)


class MinechatWriteFactory(Factory):
    protocol = MinechatWriteDoor

    def __init__(self, room: Room) -> None:
        self.room = room
