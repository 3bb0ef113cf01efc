"""The IRC door: irssi, WeeChat, HexChat and any IRC client, in the same chat as everyone.

Every channel is a chatd room: JOIN makes or joins one, PART leaves it, and a message to
a channel is said in that room, whichever rooms its sender is in. A client that only
connects is in the default room, C{default_room} (C{#lobby}). Registration (NICK, USER,
PASS, CAP, SASL PLAIN), the usual commands and the IRCv3 capabilities clients use are
answered here; the chat's rules stay in the Room: a PRIVMSG is L{Room.speak}, a NICK is
L{Room.rename}, a login is the Room's, and every line but PING, PONG and CAP counts
against the flood caps (L{Room.accept}).

Everything about channels goes through L{Channels} (irc_channels), the door's seam to the
rooms. What the chat reports (joins, renames, topics, kicks) the door reads from the
events' fields (C{Notice.about}), never from their wording.
Parsing, formatting, splitting and nick mapping are pure functions in L{irc_wire}.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.words.protocols import irc

from chatd import __version__
from chatd.doors import irc_wire as wire
from chatd.doors.irc_channels import ERR_UNKNOWNERROR, Channels, Refused
from chatd.doors.irc_members import Rosters, View
from chatd.doors.output import STREAM_CHUNK, Output, Turn
from chatd.errors import CommandError, UsageError
from chatd.events import Error, Event, History, Identity, Message, Notice, Presence, Rooms
from chatd.members import deliver
from chatd.people import Session, name_key
from chatd.room import Room
from chatd.text import chunks, clock_time, cut_message

log = Logger(namespace="chatd.doors.irc")

SERVER = "chatd"  # the server's name in prefixes; also the host part of every user's mask
USER = "chat"  # the user part of every mask: chatd has no idents
NETWORK = "chatd"
REGISTRATION_TIMEOUT = 60.0  # seconds from connecting to NICK + USER (+ CAP END)
EARLY_LINES = 100  # lines a client may send before it has registered
SASL_ATTEMPTS = 3  # before registration; each counts against the Accounts' failed-login limit
SASL_CHUNK = 400  # RFC: AUTHENTICATE payloads come in pieces of 400 bytes
CHATHISTORY_MAX = 100  # messages one CHATHISTORY answers with at most

# IRCv3 numerics Twisted's table lacks.
RPL_LOGGEDIN = "900"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
RPL_SASLMECHS = "908"
ERR_INPUTTOOLONG = "417"
ERR_NICKCHANGETOOFAST = "438"
RPL_WHOISACCOUNT = "330"
RPL_CREATIONTIME = "329"

CAPS = (
    "account-tag",
    "away-notify",
    "batch",
    "draft/chathistory",
    "echo-message",
    "message-tags",
    "sasl",
    "server-time",
)
CAP_VALUES = {"sasl": "PLAIN"}

_batches = itertools.count(1)


def mask(name: str) -> str:
    """The C{nick!user@host} of the chatd user called C{name}."""
    return f"{wire.nick_of(name)}!{USER}@{SERVER}"


class IRCDoor(irc.IRC):
    """One IRC connection: Twisted's IRC server protocol with chatd's chat behind it."""

    door = "irc"
    factory: IRCFactory
    session: Session | None = None
    peer = "?"

    def connectionMade(self) -> None:
        self.hostname = SERVER
        self.peer = getattr(self.transport.getPeer(), "host", "?")
        room = self.factory.room
        self.room = room
        self.output = Output(
            self.transport, self.factory.turn, room.config.max_output_bytes, lambda: self.session
        )
        self._buffer = b""
        self._skipping = False  # the rest of a line too long to read
        self.nick = "*"  # what the client is called on the wire
        self.wanted: str | None = None  # NICK before registration
        self.user_given = False
        self.password: str | None = None  # PASS
        self.caps: set[str] = set()
        self.render_key = self._render_key()
        self.negotiating = False  # CAP LS/REQ seen, CAP END not yet
        self.cap_302 = False
        self.sasl: str | None = None  # the payload so far, while an AUTHENTICATE runs
        self.sasl_tries = 0
        self.checking = False  # a login is being checked
        self.welcomed = False
        self.early: list[Event] | None = []  # events before the welcome
        self.early_lines = 0
        # The channels this client shows (each room's own spelling) -> how the members it
        # was told of differ from the door's shared roster (O(1) while nothing is pending).
        # They follow the person's rooms in the Room (the default room too: PART leaves it).
        self.channels: dict[str, View] = {}
        self.user_modes = ""
        self.gone = False
        self.timeout = room.clock.callLater(REGISTRATION_TIMEOUT, self._too_slow)
        self.channels_api = self.factory.channels
        self.rosters = self.factory.rosters
        self.factory.doors.add(self)

    # -- bytes in ---------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Lines end with LF (CR LF, or a bare LF as mIRC sends); each is decoded on its
        own, so a character split between two reads is whole again."""
        *lines, rest = (self._buffer + data).split(b"\n")
        self._buffer = rest
        for line in lines:
            if self.gone:
                return
            if self._skipping:  # the end of a line too long to read
                self._skipping = False
            elif len(line) > wire.MAX_INPUT_BYTES:
                self._too_long()
            else:
                self._line(line.rstrip(b"\r"))
        if len(self._buffer) > wire.MAX_INPUT_BYTES and not self.gone:
            self._buffer = b""
            self._too_long()
            self._skipping = True

    def _too_long(self) -> None:
        self.numeric(
            ERR_INPUTTOOLONG,
            f"Input line was too long (over {wire.MAX_INPUT_BYTES} bytes); nothing of it was read",
        )

    def _line(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            self.server_notice("your line was not valid UTF-8; the bad bytes became \ufffd")
        if not text.strip(" "):
            return
        try:
            line = wire.parse(text)
        except wire.BadLine:
            self.numeric(irc.ERR_UNKNOWNCOMMAND, "*", "that line holds no IRC command")
            return
        command = line.command
        if not self.welcomed:  # no session to count against yet: a bound of its own
            self.early_lines += 1
            if self.early_lines > EARLY_LINES:
                self.close(f"more than {EARLY_LINES} lines before registering")
                return
        elif command in UNCOUNTED:
            pass  # keep-alives and capability talk never count against the flood caps
        elif not hasattr(self, f"irc_{command}") and self.room.commands.get(command.lower()):
            pass  # a chatd command: Room.receive counts it
        elif not self.room.accept(self.session):
            return  # the flood rules told the client why
        self.handle(line)

    def handle(self, line: wire.Line) -> None:
        """Run one command; whatever goes wrong, the client hears of it."""
        command = line.command
        method: Callable[[list[str]], Any] | None = getattr(self, f"irc_{command}", None)
        if method is None:
            self._unknown(command, line.params)
            return
        if not self.welcomed and command not in BEFORE_REGISTRATION:
            self.numeric(irc.ERR_NOTREGISTERED, "You have not registered (NICK and USER first)")
            return
        try:
            method(line.params)
        except Exception:
            log.failure("IRC {command} from {peer} failed", command=command, peer=self.peer)
            self.server_notice(f"{command} failed on the server; please try again later")

    def _unknown(self, command: str, params: list[str]) -> None:
        """A chatd command sent raw (C{/quote HELP}, irssi's unknown C{/REGISTER ...}) runs
        as if typed; anything else is unknown."""
        cmd = self.room.commands.get(command.lower())
        if self.welcomed and cmd is not None and self.session is not None:
            self.room.receive(self.session, " ".join([f"/{command.lower()}", *params]))
            return
        if not self.welcomed:
            self.numeric(irc.ERR_NOTREGISTERED, "You have not registered (NICK and USER first)")
            return
        self.numeric(irc.ERR_UNKNOWNCOMMAND, command, "Unknown command")

    # -- bytes out --------------------------------------------------------------------------

    def sendLine(self, line: str) -> None:
        self.output.write(line.encode("utf-8", "replace") + b"\r\n")

    def send(
        self,
        command: str,
        *params: str,
        prefix: str | None = SERVER,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.sendLine(wire.format_line(command, params, prefix, tags))

    def numeric(self, number: str, *params: str) -> None:
        """A numeric reply to this client (named by the nick it asked for, until welcomed)."""
        self.send(number, self.nick if self.welcomed else self.wanted or "*", *params)

    def server_notice(self, text: str) -> None:
        for line in text.split("\n"):
            self._text("NOTICE", SERVER, self.nick, line, None)

    def _text(
        self, command: str, prefix: str, target: str, text: str, tags: dict[str, str] | None
    ) -> None:
        """PRIVMSG or NOTICE lines holding C{text}, each within 512 bytes."""
        for piece in _pieces(command, prefix, target, text):
            self.send(command, target, piece, prefix=prefix, tags=tags)

    def close(self, reason: str) -> None:
        """The Room (or the door) ends the connection: ERROR says why, then it closes."""
        if self.gone:
            return
        log.info("closing {peer}: {reason}", peer=self.peer, reason=reason)
        self.send("ERROR", f"Closing link: {reason}", prefix=None)
        self.gone = True
        self.output.finish()
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.gone = True
        self.factory.doors.discard(self)
        for name in self.channels:
            self.rosters.release(name)
        self.channels = {}
        if self.timeout.active():
            self.timeout.cancel()
        if self.session is not None:
            self.factory.away.pop(self.session.user.key, None)
            self.room.disconnect(self.session, "IRC connection closed")

    def _too_slow(self) -> None:
        if not self.welcomed:
            self.close(f"not registered within {REGISTRATION_TIMEOUT:g} seconds")

    # -- registration -----------------------------------------------------------------------

    def irc_CAP(self, params: list[str]) -> None:
        sub = params[0].upper() if params else ""
        if sub == "LS":
            if not self.welcomed:
                self.negotiating = True
            self.cap_302 = self.cap_302 or (len(params) > 1 and params[1].isdigit())
            offered = " ".join(
                f"{c}={CAP_VALUES[c]}" if self.cap_302 and c in CAP_VALUES else c for c in CAPS
            )
            self.send("CAP", self.nick, "LS", offered)
        elif sub == "LIST":
            self.send("CAP", self.nick, "LIST", " ".join(sorted(self.caps)))
        elif sub == "REQ":
            if not self.welcomed:
                self.negotiating = True
            asked = params[1].split() if len(params) > 1 else []
            wanted = [c.removeprefix("-") for c in asked]
            if asked and all(c in CAPS for c in wanted):
                for c in asked:
                    if c.startswith("-"):
                        self.caps.discard(c[1:])
                    else:
                        self.caps.add(c)
                self.render_key = self._render_key()
                self.send("CAP", self.nick, "ACK", " ".join(asked))
            else:
                self.send("CAP", self.nick, "NAK", " ".join(asked))
        elif sub == "END":
            self.negotiating = False
            self._try_register()
        else:
            self.numeric("410", sub or "*", "Invalid CAP command; use LS, LIST, REQ or END")

    def irc_PASS(self, params: list[str]) -> None:
        if self.welcomed:
            self.numeric(irc.ERR_ALREADYREGISTRED, "You may not reregister")
        elif not params:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")
        else:
            self.password = params[0]

    def irc_NICK(self, params: list[str]) -> None:
        if not params or not params[0]:
            self.numeric(irc.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[0]
        name = wire.name_of(nick)
        if not self.welcomed:
            self.wanted = nick
            self._try_register()
            return
        assert self.session is not None
        if name == self.session.user.name:
            return
        problem = self.room.name_problem(name, self.session)
        if problem is not None:
            taken = name in problem or (
                name_key(name) != name_key(self.session.user.name)
                and "belongs to an account" in problem
            )
            self.numeric(
                irc.ERR_NICKNAMEINUSE if taken else irc.ERR_ERRONEUSNICKNAME, nick, problem
            )
            return
        try:
            self.room.rename(self.session, name)
        except CommandError as e:
            self.numeric(ERR_NICKCHANGETOOFAST, nick, str(e))

    def irc_USER(self, params: list[str]) -> None:
        if self.welcomed:
            self.numeric(irc.ERR_ALREADYREGISTRED, "You may not reregister")
        elif len(params) < 4:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        else:
            self.user_given = True
            self._try_register()

    def irc_AUTHENTICATE(self, params: list[str]) -> None:
        """SASL PLAIN (IRCv3 sasl-3.1): the account's name and password, base64."""
        if "sasl" not in self.caps:
            self.numeric(ERR_SASLFAIL, "SASL authentication failed: CAP REQ sasl first")
            return
        arg = params[0] if params else ""
        if self.checking:
            self.numeric(ERR_SASLFAIL, "SASL authentication failed: a login is being checked")
            return
        if arg == "*":
            self.sasl = None
            self.numeric(ERR_SASLABORTED, "SASL authentication aborted")
            return
        if self.sasl is None:
            if arg.upper() != "PLAIN":
                self.numeric(RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
                self.numeric(ERR_SASLFAIL, "SASL authentication failed: only PLAIN is offered")
                return
            if self.session is not None and self.session.user.account is not None:
                self.numeric("907", "You have already authenticated using SASL")
                return
            self.sasl = ""
            self.send("AUTHENTICATE", "+", prefix=None)
            return
        if arg != "+":
            self.sasl += arg
        if len(self.sasl) > 4 * SASL_CHUNK:
            self.sasl = None
            self.numeric(ERR_SASLTOOLONG, "SASL message too long")
            return
        if len(arg) == SASL_CHUNK:
            return  # more comes
        payload, self.sasl = self.sasl, None
        try:
            _, name, password = base64.b64decode(payload, validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.numeric(ERR_SASLFAIL, "SASL authentication failed: not authzid\\0name\\0password")
            return
        self.sasl_tries += 1
        if self.sasl_tries > SASL_ATTEMPTS and not self.welcomed:
            self.numeric(ERR_SASLFAIL, f"SASL authentication failed: {SASL_ATTEMPTS} tries")
            return
        self._log_in(name, password, sasl=True)

    def _log_in(self, name: str, password: str, sasl: bool) -> None:
        """Check an account's password: before the welcome the account arrives (it joins
        once, under its own name); after it, the guest logs in."""
        self.checking = True
        if self.session is None:
            d = self.room.arrive_with_password(self, name, password)
        else:
            d = defer.maybeDeferred(self.room.login, self.session, name, password)
            d.addCallback(lambda _: self.session)

        def done(session: Session) -> None:
            self.checking = False
            if self.gone:
                self.room.disconnect(session, "IRC connection closed while logging in")
                return
            self.session = session
            if not session.user.name:
                return  # refused by the flood rules: told and closed
            account = session.user.account or name
            if sasl:
                self.numeric(
                    RPL_LOGGEDIN, mask(account), account, f"You are now logged in as {account}"
                )
                self.numeric(RPL_SASLSUCCESS, "SASL authentication successful")
            self._try_register()

        def failed(failure: Any) -> None:
            self.checking = False
            if failure.check(CommandError):
                why = failure.getErrorMessage()
            else:
                log.failure("logging {peer} in failed", failure, peer=self.peer)
                why = "the login could not be checked; try again later"
            if self.gone:
                return
            if sasl:
                self.numeric(ERR_SASLFAIL, f"SASL authentication failed: {why}")
            else:
                self.numeric(irc.ERR_PASSWDMISMATCH, f"Password incorrect: {why}")
                self.close(f"PASS refused: {why}")

        d.addCallbacks(done, failed)

    def _try_register(self) -> None:
        """Welcome the client once it has said NICK and USER and ended its CAP talk."""
        if self.welcomed or self.gone or self.checking:
            return
        if self.wanted is None or not self.user_given or self.negotiating:
            return
        if self.session is None and self.password is not None:
            account, colon, password = self.password.partition(":")
            name = account if colon else wire.name_of(self.wanted)
            self.password = None
            self._log_in(name, password if colon else account, sasl=False)
            return
        if self.session is None:
            name = wire.name_of(self.wanted)
            problem = self.room.name_problem(name)
            if problem is not None:
                taken = name in problem
                self.numeric(
                    irc.ERR_NICKNAMEINUSE if taken else irc.ERR_ERRONEUSNICKNAME,
                    self.wanted,
                    problem,
                )
                self.wanted = None
                return
            self.session = self.room.connect(self, name)
            if not self.session.user.name:
                return  # refused by the flood rules: told and closed
        self._welcome()

    def _welcome(self) -> None:
        assert self.session is not None
        if self.timeout.active():
            self.timeout.cancel()
        self.welcomed = True
        name = self.session.user.name
        self.nick = wire.nick_of(name)
        self.numeric(irc.RPL_WELCOME, f"Welcome to chatd, {self.nick}")
        self.numeric(irc.RPL_YOURHOST, f"Your host is {SERVER}, running chatd {__version__}")
        self.numeric(irc.RPL_CREATED, "This server is the chatd chat: telnet, web and IRC alike")
        self.numeric(irc.RPL_MYINFO, SERVER, f"chatd-{__version__}", "i", "nt")
        self._isupport()
        self._motd()
        self._sync_rooms()  # the default room, and an account's rooms, back at login
        early, self.early = self.early or [], None
        for event in early:
            self.deliver(event)

    def _isupport(self) -> None:
        config = self.room.config
        tokens = [
            "AWAYLEN=200",
            "CASEMAPPING=ascii",
            f"CHANLIMIT=#:{config.max_rooms_per_person}",
            "CHANMODES=,,,int",
            f"CHANNELLEN={config.max_room_name_length}",
            "CHANTYPES=#",
            f"CHATHISTORY={CHATHISTORY_MAX}",
            "MSGREFTYPES=msgid,timestamp",
            f"NETWORK={NETWORK}",
            f"NICKLEN={config.max_name_length + 1}",
            "PREFIX=(o)@",
            "TARGMAX=PRIVMSG:4,NOTICE:4,JOIN:,PART:,NAMES:1,WHOIS:1",
            "TOPICLEN=300",
            "UTF8ONLY",
        ]
        self.numeric(irc.RPL_ISUPPORT, *tokens, "are supported by this server")

    def _motd(self) -> None:
        lobby = self.channels_api.lobby
        self.numeric(irc.RPL_MOTDSTART, f"- {SERVER} message of the day -")
        for line in (
            f"You are in {lobby} with everyone: telnet, the web page and IRC users alike.",
            "Every channel is a chatd room: JOIN #name makes or joins one, LIST shows them.",
            "chatd's commands work as raw commands: /quote HELP lists them",
            "(irssi and WeeChat also pass unknown ones on: /register NAME PASSWORD).",
            "Log in with SASL PLAIN, or PASS name:password, to chat under your account.",
        ):
            self.numeric(irc.RPL_MOTD, f"- {line}")
        self.numeric(irc.RPL_ENDOFMOTD, "End of /MOTD command")

    # -- keep-alives, the end -----------------------------------------------------------------

    def irc_PING(self, params: list[str]) -> None:
        if not params:
            self.numeric("409", "No origin specified")
            return
        self.send("PONG", SERVER, params[0])

    def irc_PONG(self, params: list[str]) -> None:
        pass  # an answer to nothing we asked: clients send them to keep the link up

    def irc_QUIT(self, params: list[str]) -> None:
        reason = params[0] if params else "Client quit"
        self.close(f"Quit: {reason}")

    # -- channels ---------------------------------------------------------------------------

    def irc_JOIN(self, params: list[str]) -> None:
        if not params:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "JOIN", "Not enough parameters")
            return
        if params[0] == "0":  # leave every channel
            if self.channels:
                self.irc_PART([",".join(self.channels)])
            return
        for name in params[0].split(","):
            if not name:
                continue
            shown = self.channels_api.find(name)
            if shown is not None and shown in self.channels:
                continue  # joined already
            if shown is None or not self.channels_api.is_in(self.session, shown):
                try:
                    shown = self.channels_api.join(self.session, name)
                except Refused as e:
                    self.numeric(e.numeric, name, str(e))
                    continue
            if shown not in self.channels:  # the Room's list of rooms may have shown it
                self._join(shown)

    def _join(self, name: str) -> None:
        """Tell the client it is in channel C{name}: JOIN, the topic, the names."""
        me = self.session.user.name
        self.channels[name] = self.rosters.view(name, self.channels_api.names(name), me)
        self.send("JOIN", name, prefix=mask(me))
        self._topic(name)
        self._names(name)

    def _sync_rooms(self) -> None:
        """Show the rooms this person is in as channels, and stop showing those they are
        no longer in: rooms joined or left on another device, or brought back at login.
        Read from the rooms as they are now, so a late event cannot undo a later move."""
        if self.session is None or not self.welcomed:
            return
        now = self.channels_api.joined(self.session)
        for name in list(self.channels):
            if name not in now:
                del self.channels[name]
                self.rosters.release(name)
                self.send("PART", name, prefix=mask(self.session.user.name))
        for name in now:
            if name not in self.channels:
                self._join(name)

    def _topic(self, name: str) -> None:
        topic = self.channels_api.topic(name)
        if topic:
            self.numeric(irc.RPL_TOPIC, name, topic)
        else:
            self.numeric(irc.RPL_NOTOPIC, name, "No topic is set")

    def _names(self, name: str) -> None:
        owner = self.channels_api.owner(name)
        nicks = [
            ("@" if name_key(n) == owner else "") + wire.nick_of(n)
            for n in self.channels_api.names(name)
        ]
        head = f":{SERVER} {irc.RPL_NAMREPLY} {self.nick} = {name} :"
        budget = wire.LINE_BYTES - 2 - wire.utf8_len(head)
        line: list[str] = []
        size = 0
        for nick in nicks:
            n = wire.utf8_len(nick) + 1
            if line and size + n > budget:
                self.numeric(irc.RPL_NAMREPLY, "=", name, " ".join(line))
                line, size = [], 0
            line.append(nick)
            size += n
        if line:
            self.numeric(irc.RPL_NAMREPLY, "=", name, " ".join(line))
        self.numeric(irc.RPL_ENDOFNAMES, name, "End of /NAMES list")

    def _channel(self, name: str) -> str | None:
        """The channel C{name}, or None after telling the client it does not exist."""
        found = self.channels_api.find(name)
        if found is None:
            self.numeric(irc.ERR_NOSUCHCHANNEL, name, self.channels_api.missing(name))
        return found

    def irc_PART(self, params: list[str]) -> None:
        if not params:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "PART", "Not enough parameters")
            return
        reason = params[1] if len(params) > 1 else ""
        for name in params[0].split(","):
            found = self._channel(name)
            if found is None:
                continue
            if found not in self.channels:
                self.numeric(irc.ERR_NOTONCHANNEL, found, "You're not on that channel")
                continue
            view = self.channels.pop(found)  # first: the Room's list of rooms follows
            try:
                self.channels_api.part(self.session, found)
            except Refused as e:  # not in it, or the last room: the Room's own sentence
                self.channels[found] = view
                about = "PART" if e.numeric == ERR_UNKNOWNERROR else found  # 400 names a command
                self.numeric(e.numeric, about, str(e))
                continue
            self.rosters.release(found)
            self.send(
                "PART", found, *([reason] if reason else []), prefix=mask(self.session.user.name)
            )

    def irc_NAMES(self, params: list[str]) -> None:
        if not params:
            for name in self.channels or [self.channels_api.lobby]:
                self._names(name)
            return
        for name in params[0].split(","):
            found = self.channels_api.find(name)
            if found is None:
                self.numeric(irc.RPL_ENDOFNAMES, name, "End of /NAMES list")
            else:
                self._names(found)

    def irc_TOPIC(self, params: list[str]) -> None:
        if not params:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "TOPIC", "Not enough parameters")
            return
        found = self._channel(params[0])
        if found is None:
            return
        if len(params) == 1:
            self._topic(found)
            return
        try:
            self.channels_api.set_topic(self.session, found, params[1])
        except CommandError as e:
            self.numeric(irc.ERR_CHANOPRIVSNEEDED, found, str(e))

    def irc_LIST(self, params: list[str]) -> None:
        wanted = {name_key(n) for n in params[0].split(",")} if params and params[0] else None
        self.numeric(irc.RPL_LISTSTART, "Channel", "Users  Name")
        for name, count, topic in self.channels_api.conversations():
            if wanted is None or name_key(name) in wanted:
                self.numeric(irc.RPL_LIST, name, str(count), topic)
        self.numeric(irc.RPL_LISTEND, "End of /LIST")

    def irc_KICK(self, params: list[str]) -> None:
        if len(params) < 2:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "KICK", "Not enough parameters")
            return
        found = self._channel(params[0])
        if found is None:
            return
        for nick in params[1].split(",")[:4]:
            name = wire.name_of(nick)
            try:
                self.channels_api.kick(self.session, found, name)
            except CommandError as e:
                inside = {name_key(n) for n in self.channels_api.names(found)}
                if name_key(name) in inside:
                    self.numeric(irc.ERR_CHANOPRIVSNEEDED, found, str(e))
                else:
                    self.numeric(irc.ERR_USERNOTINCHANNEL, nick, found, str(e))

    def irc_INVITE(self, params: list[str]) -> None:
        if len(params) < 2:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "INVITE", "Not enough parameters")
            return
        nick, channel = params[0], params[1]
        found = self._channel(channel)
        if found is None:
            return
        name = wire.name_of(nick)
        if name_key(name) not in {name_key(n) for n in self.room.online()}:
            self.numeric(irc.ERR_NOSUCHNICK, nick, "No such nick: nobody by that name is online")
            return
        if name_key(name) in {name_key(n) for n in self.channels_api.names(found)}:
            self.numeric(irc.ERR_USERONCHANNEL, nick, found, f"{nick} is in {found} already")
            return
        try:
            spelled = self.channels_api.invite(self.session, found, name)
        except CommandError as e:
            self.numeric(irc.ERR_CHANOPRIVSNEEDED, found, str(e))
            return
        self.numeric(irc.RPL_INVITING, wire.nick_of(spelled), found)

    def irc_WHO(self, params: list[str]) -> None:
        target = params[0] if params else "*"
        found = self.channels_api.find(target) if target.startswith("#") else None
        owner = None
        if found is not None:
            names = self.channels_api.names(found)
            owner = self.channels_api.owner(found)
        elif target in ("*", "0"):
            names = self.room.online()
        else:
            user = self.room.find(wire.name_of(target))
            names = [user.name] if user is not None else []
        channel = found or (self.channels_api.lobby if names else "*")
        for name in names:
            flags = "G" if name_key(name) in self.factory.away else "H"
            if owner is not None and name_key(name) == owner:
                flags += "@"
            self.numeric(
                irc.RPL_WHOREPLY,
                channel,
                USER,
                SERVER,
                SERVER,
                wire.nick_of(name),
                flags,
                f"0 {self._realname(name)}",
            )
        self.numeric(irc.RPL_ENDOFWHO, target, "End of WHO list")

    def _realname(self, name: str) -> str:
        user = self.room.find(name)
        if user is None or not user.sessions:
            return "on another chatd node"
        doors = sorted({s.client.door for s in user.sessions})
        who = f"account {user.account}" if user.account else "guest"
        return f"{who} ({', '.join(doors)})"

    def irc_WHOIS(self, params: list[str]) -> None:
        if not params:
            self.numeric(irc.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[-1]
        name = wire.name_of(nick)
        user = self.room.find(name)
        elsewhere = user is None and name_key(name) in {name_key(n) for n in self.room.online()}
        if user is None and not elsewhere:
            self.numeric(irc.ERR_NOSUCHNICK, nick, "No such nick: nobody by that name is online")
        else:
            shown = wire.nick_of(user.name if user is not None else name)
            realname = self._realname(user.name if user is not None else name)
            self.numeric(irc.RPL_WHOISUSER, shown, USER, SERVER, "*", realname)
            self.numeric(irc.RPL_WHOISSERVER, shown, SERVER, "chatd")
            channels = self._channels_of(user.sessions[0] if user and user.sessions else None)
            self.numeric(irc.RPL_WHOISCHANNELS, shown, " ".join(channels))
            if user is not None and user.account:
                self.numeric(RPL_WHOISACCOUNT, shown, wire.nick_of(user.account), "is logged in as")
            away = self.factory.away.get(name_key(name))
            if away is not None:
                self.numeric(irc.RPL_AWAY, shown, away)
        self.numeric(irc.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")

    def _channels_of(self, session: Session | None) -> list[str]:
        """The channels a person is in, an owner's with @ (WHOIS); the default room only
        for someone on another node."""
        if session is None:
            return [self.channels_api.lobby]
        names = self.channels_api.joined(session)
        return [
            ("@" if name_key(session.user.name) == self.channels_api.owner(n) else "") + n
            for n in names
        ]

    def irc_WHOWAS(self, params: list[str]) -> None:
        nick = params[0] if params else "*"
        self.numeric(irc.ERR_WASNOSUCHNICK, nick, "chatd keeps no record of past nicks")
        self.numeric(irc.RPL_ENDOFWHOWAS, nick, "End of WHOWAS")

    def irc_ISON(self, params: list[str]) -> None:
        online = {name_key(n) for n in self.room.online()}
        nicks = " ".join(params).split()
        self.numeric(
            irc.RPL_ISON, " ".join(n for n in nicks if name_key(wire.name_of(n)) in online)
        )

    def irc_USERHOST(self, params: list[str]) -> None:
        replies = []
        for nick in params[:5]:
            user = self.room.find(wire.name_of(nick))
            if user is not None:
                away = "-" if user.key in self.factory.away else "+"
                replies.append(f"{wire.nick_of(user.name)}={away}{USER}@{SERVER}")
        self.numeric(irc.RPL_USERHOST, " ".join(replies))

    def irc_MODE(self, params: list[str]) -> None:
        if not params:
            self.numeric(irc.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
            return
        target = params[0]
        if target.startswith("#"):
            found = self._channel(target)
            if found is None:
                return
            change = params[1] if len(params) > 1 else ""
            if not change:
                modes = "+int" if self.channels_api.invite_only(found) else "+nt"
                self.numeric(irc.RPL_CHANNELMODEIS, found, modes)
                self.numeric(RPL_CREATIONTIME, found, str(int(self.room.started)))
            elif change.lstrip("+") == "b" and len(params) == 2:
                self.numeric(irc.RPL_ENDOFBANLIST, found, "End of channel ban list")
            elif change in ("+i", "i", "-i"):
                self._invite_only_mode(found, change != "-i")
            else:
                self.numeric(
                    irc.ERR_CHANOPRIVSNEEDED,
                    found,
                    f"channel modes cannot be changed here; {found}'s owner makes it "
                    "invite-only (+i) with INVITE",
                )
            return
        if name_key(wire.name_of(target)) != self.session.user.key:
            self.numeric(irc.ERR_USERSDONTMATCH, "Can't change or see modes for other users")
            return
        if len(params) == 1:
            self.numeric(irc.RPL_UMODEIS, "+" + self.user_modes)
            return
        change, sign, modes = params[1], "+", set(self.user_modes)
        for c in change:
            if c in "+-":
                sign = c
            elif c == "i" and sign == "+":
                modes.add(c)
            elif c == "i":
                modes.discard(c)
            else:
                self.numeric(irc.ERR_UMODEUNKNOWNFLAG, f"Unknown MODE flag {c}; only +i is known")
                return
        self.user_modes = "".join(sorted(modes))
        self.send("MODE", self.nick, change, prefix=mask(self.session.user.name))

    def _invite_only_mode(self, channel: str, wanted: bool) -> None:
        """C{MODE #dev +i} or C{-i}. The Room makes a room invite-only only by inviting
        someone (C{/invite NAME}) and never opens it again, so unless the room is already
        as asked (its modes are the answer), the client is told exactly what to type."""
        if self.channels_api.invite_only(channel) == wanted:
            self.numeric(irc.RPL_CHANNELMODEIS, channel, "+int" if wanted else "+nt")
        elif wanted:
            self.numeric(
                irc.ERR_UNKNOWNMODE,
                "i",
                f"chatd has no mode to set for this: {channel} becomes invite-only when its "
                f"owner invites someone, with INVITE nick {channel} (/invite nick in {channel})",
            )
        else:
            self.numeric(
                irc.ERR_UNKNOWNMODE,
                "i",
                f"{channel} stays invite-only: chatd has no way to open it again; its owner "
                f"lets people in with INVITE nick {channel}",
            )

    def irc_AWAY(self, params: list[str]) -> None:
        user = self.session.user
        text = params[0].strip() if params else ""
        if text:
            self.factory.away[user.key] = text[:200]
            self.numeric(irc.RPL_NOWAWAY, "You have been marked as being away")
        else:
            self.factory.away.pop(user.key, None)
            self.numeric(irc.RPL_UNAWAY, "You are no longer marked as being away")
        self.factory.tell_away(self, user.name, text[:200])

    def irc_MOTD(self, params: list[str]) -> None:
        self._motd()

    def irc_LUSERS(self, params: list[str]) -> None:
        count = len(self.room.online())
        self.numeric(irc.RPL_LUSERCLIENT, f"There are {count} users on 1 server")

    def irc_VERSION(self, params: list[str]) -> None:
        self.numeric(irc.RPL_VERSION, f"chatd-{__version__}", SERVER, "the chatd chat server")

    def irc_TIME(self, params: list[str]) -> None:
        now = self.room.clock.seconds()
        self.numeric(irc.RPL_TIME, SERVER, wire.server_time(now))

    def irc_TAGMSG(self, params: list[str]) -> None:
        pass  # typing notifications and the like: chatd has none to pass on

    # -- talking ----------------------------------------------------------------------------

    def irc_PRIVMSG(self, params: list[str], command: str = "PRIVMSG") -> None:
        if not params:
            self.numeric(irc.ERR_NORECIPIENT, f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            self.numeric(irc.ERR_NOTEXTTOSEND, "No text to send")
            return
        text = params[1]
        if text.startswith("\x01ACTION ") or text == "\x01ACTION\x01":
            text = "* " + text[8:].rstrip("\x01")
        elif text.startswith("\x01"):
            word = text.strip("\x01").split(" ")[0]
            self.server_notice(f"CTCP {word} is not passed on by chatd; only ACTION (/me) is")
            return
        for target in params[0].split(",")[:4]:
            if target:
                self._say(target, text)

    def irc_NOTICE(self, params: list[str]) -> None:
        self.irc_PRIVMSG(params, "NOTICE")

    def _say(self, target: str, text: str) -> None:
        session = self.session
        room = None
        if target.startswith("#"):
            room = self._channel(target)
            if room is None:
                return
            if room not in self.channels:
                self.numeric(
                    irc.ERR_CANNOTSENDTOCHAN,
                    room,
                    f"you are not in {room}; JOIN {room} first",
                )
                return
            to = None
        else:
            to = self.room.recipient(wire.name_of(target))
            if to is None:
                self.numeric(irc.ERR_NOSUCHNICK, target, "No such nick: nobody by that name")
                return
        try:
            self.room.speak(session, text, to, room)
        except UsageError:
            self.numeric(irc.ERR_NOTEXTTOSEND, "No text to send")
            return
        except CommandError as e:
            self.numeric(irc.ERR_CANNOTSENDTOCHAN, target, str(e))
            return
        if to is not None:
            away = self.factory.away.get(name_key(to))
            if away is not None:
                self.numeric(irc.RPL_AWAY, wire.nick_of(to), away)

    # -- history ----------------------------------------------------------------------------

    def irc_CHATHISTORY(self, params: list[str]) -> None:
        """IRCv3 chathistory: LATEST, BEFORE, AFTER, AROUND, BETWEEN and TARGETS."""
        sub = params[0].upper() if params else ""

        def fail(code: str, why: str) -> None:
            self.send("FAIL", "CHATHISTORY", code, *params[:3], why)

        need = {"LATEST": 4, "BEFORE": 4, "AFTER": 4, "AROUND": 4, "BETWEEN": 5, "TARGETS": 4}
        if sub not in need or len(params) < need[sub]:
            fail(
                "INVALID_PARAMS",
                "use LATEST|BEFORE|AFTER|AROUND <target> <ref> <limit>, "
                "BETWEEN <target> <ref> <ref> <limit> or TARGETS <ref> <ref> <limit>",
            )
            return
        try:
            limit = min(int(params[-1]), CHATHISTORY_MAX)
        except ValueError:
            fail("INVALID_PARAMS", "the limit is a number")
            return
        if sub == "TARGETS":
            self._targets(params[1], params[2], limit)
            return
        target = params[1]
        refs = params[2:-1]
        parsed = [wire.history_ref(r) for r in refs]
        if any(p is None for p in parsed) or (sub != "LATEST" and "*" in refs):
            fail(
                "INVALID_MSGREFTYPE",
                "a reference is msgid=ID, timestamp=YYYY-MM-DDThh:mm:ss.sssZ, or * (LATEST)",
            )
            return
        found = self.channels_api.find(target) if target.startswith("#") else None
        if target.startswith("#") and found is None:
            fail("INVALID_TARGET", self.channels_api.missing(target))
            return
        if found is not None and not self.channels_api.is_in(self.session, found):
            fail("INVALID_TARGET", f"you are not in {found}; JOIN {found} to read its history")
            return
        if found is None:  # whispers are not kept in history: an empty answer
            self._history_batch(target, [])
            return

        def answer(messages: list[Message]) -> None:
            chosen = wire.history_window(sub, messages, parsed, limit)  # type: ignore[arg-type]
            self._history_batch(found, chosen)

        def failed(failure: Any) -> None:
            log.failure("CHATHISTORY for {peer} failed", failure, peer=self.peer)
            fail("MESSAGE_ERROR", "the history could not be read; try again later")

        self.channels_api.history(found).addCallbacks(answer, failed)

    def _targets(self, a: str, b: str, limit: int) -> None:
        refs = [wire.history_ref(a), wire.history_ref(b)]
        if any(r is None or r[0] != "timestamp" for r in refs):
            self.send(
                "FAIL", "CHATHISTORY", "INVALID_PARAMS", "TARGETS", "TARGETS takes timestamps"
            )
            return
        low, high = sorted(float(r[1]) for r in refs)  # type: ignore[index]
        names = list(self.channels)

        def answer(histories: list[list[Message]]) -> None:
            latest = []
            for name, messages in zip(names, histories, strict=True):
                times = [m.time for m in messages if low < m.time < high]
                if times:
                    latest.append((max(times), name))
            batch = self._open_batch("draft/chathistory-targets")
            for when, name in sorted(latest, reverse=True)[:limit]:
                self.send(
                    "CHATHISTORY",
                    "TARGETS",
                    name,
                    f"timestamp={wire.server_time(when)}",
                    tags=batch,
                )
            self._close_batch(batch)

        def failed(failure: Any) -> None:
            log.failure("CHATHISTORY TARGETS for {peer} failed", failure, peer=self.peer)
            self.send(
                "FAIL", "CHATHISTORY", "MESSAGE_ERROR", "TARGETS", "the history could not be read"
            )

        reads = [self.channels_api.history(n) for n in names]
        defer.gatherResults(reads, consumeErrors=True).addCallbacks(answer, failed)

    def _open_batch(self, kind: str, *params: str) -> dict[str, str] | None:
        if "batch" not in self.caps:
            return None
        ref = f"h{next(_batches)}"
        self.send("BATCH", f"+{ref}", kind, *params)
        return {"batch": ref}

    def _close_batch(self, batch: dict[str, str] | None) -> None:
        if batch is not None:
            self.send("BATCH", f"-{batch['batch']}")

    def _history_batch(self, target: str, messages: list[Message]) -> None:
        """Messages as a C{chathistory} batch, each with its time and id."""
        batch = self._open_batch("chathistory", target)
        self.output.stream(self._history_lines(messages, batch))
        if batch is not None:
            self.output.write(
                wire.format_line("BATCH", [f"-{batch['batch']}"], SERVER).encode() + b"\r\n"
            )

    def _history_lines(
        self, messages: list[Message], batch: dict[str, str] | None
    ) -> Iterator[bytes]:
        limit = self.room.config.max_message_bytes
        lines = []
        for m in messages:
            lines.extend(self._message_lines(cut_message(m, limit), batch, stamped=True))
        return chunks((line.encode("utf-8", "replace") + b"\r\n" for line in lines), STREAM_CHUNK)

    # -- events from the Room -----------------------------------------------------------------

    @property
    def deliver_all(self) -> Any:
        """This door's fan-out (L{chatd.people.Client.deliver_all}): its factory's."""
        return self.factory.deliver_all

    def deliver(self, event: Event) -> None:
        # One recipient; a channel's message to many goes through L{IRCFactory.deliver_all},
        # which must keep to what this does with it (L{_message}).
        if self.early is not None:
            self.early.append(event)
            return
        if self.gone:
            return
        if isinstance(event, Message):
            self._message(event)
        elif isinstance(event, Presence):
            self._presence(event)
        elif isinstance(event, Notice):
            self._notice(event)
        elif isinstance(event, Error):
            self.server_notice(event.text)
        elif isinstance(event, Identity):
            self._identity(event)
        elif isinstance(event, History):
            self._history(event)
        elif isinstance(event, Rooms):
            self._sync_rooms()

    def _message(self, m: Message) -> None:
        session = self.session
        if m.origin is session and session is not None and "echo-message" not in self.caps:
            return
        if m.to is None:
            if m.room not in self.channels:
                return  # a room this client does not show (parted a moment ago)
            # Encoded once per message for every client with the same tags, not per client:
            # after the first, one look-up (no bound method made per recipient).
            data = m.wire.get(self.render_key)
            if data is None:
                data = m.rendered(self.render_key, self._rendered)
        else:
            data = self._encode(self._message_lines(m, None))
        self.output.write(data)

    def _rendered(self, m: Message) -> bytes:
        return self._encode(self._message_lines(m, None))

    def _render_key(self) -> str:
        """Which encoding of a message this client reads (one per set of tag capabilities):
        a str, whose hash Python keeps, so the look-up per delivery stays cheap."""
        return "irc" + "".join("1" if cap else "0" for cap in self._tag_caps())

    def _tag_caps(self) -> tuple[bool, bool, bool]:
        caps = self.caps
        return ("server-time" in caps, "message-tags" in caps, "account-tag" in caps)

    @staticmethod
    def _encode(lines: list[str]) -> bytes:
        return b"".join(line.encode("utf-8", "replace") + b"\r\n" for line in lines)

    def _message_lines(
        self, m: Message, batch: dict[str, str] | None, stamped: bool = False
    ) -> list[str]:
        """A message as PRIVMSG lines, each within 512 bytes (tags aside); a public one to
        the channel of its room."""
        timed, tagged, accounts = self._tag_caps()
        tags: dict[str, str] = dict(batch or {})
        if timed:
            tags["time"] = wire.server_time(m.time)
        if tagged:
            tags["msgid"] = str(m.id) if m.to is None else f"w{m.id}"
        if accounts:
            user = self.room.find(m.sender)
            if user is not None and user.account:
                tags["account"] = user.account
        text = m.text
        if (stamped or m.late) and not timed:
            text = f"[{clock_time(m.time)}] {text}"
        if m.to is None:
            target = m.room or self.channels_api.lobby
        elif self.session is not None and name_key(m.to) == self.session.user.key:
            target = self.nick
        else:
            target = wire.nick_of(m.to)  # our own whisper, from another device
        prefix = mask(m.sender)
        return [
            wire.format_line("PRIVMSG", [target, piece], prefix, tags or None)
            for piece in _pieces("PRIVMSG", prefix, target, text)
        ]

    def _history(self, event: History) -> None:
        if not event.messages:
            self.server_notice(f"{event.reason}: nothing")
            return
        self.server_notice(f"{event.reason} ({len(event.messages)}):")
        batch = self._open_batch("chathistory", event.room or self.nick)
        self.output.stream(self._history_lines(event.messages, batch))
        if batch is not None:
            self.output.write(
                wire.format_line("BATCH", [f"-{batch['batch']}"], SERVER).encode() + b"\r\n"
            )

    def _notice(self, event: Notice) -> None:
        """A notice, unless IRC says it its own way: joins and leaves as JOIN, PART and QUIT
        (from the member-list updates), renames as NICK, topics as TOPIC, removals as KICK. A
        room's notice goes to its channel."""
        about = event.about
        if about in ("joined", "left", "current"):
            return  # the member lists show joins and leaves; IRC has no current room
        if about == "renamed" and len(event.subject) == 2:
            self._renamed(*event.subject)
            return
        if about == "invited" and len(event.subject) == 2:
            by, invited_to = event.subject
            self.send("INVITE", self.nick, invited_to, prefix=mask(by))
            return
        room = event.room
        if room is not None and room not in self.channels:
            return  # about a room this client does not show
        if about == "topic" and room is not None and len(event.subject) == 2:
            who, topic = event.subject
            self.send("TOPIC", room, topic, prefix=mask(who))
        elif about == "removed" and room is not None and len(event.subject) == 2:
            who, by = event.subject
            self.send("KICK", room, wire.nick_of(who), event.text, prefix=mask(by))
            key = name_key(who)
            if self.session is not None and key == self.session.user.key:
                if self.channels.pop(room, None) is not None:
                    self.rosters.release(room)
            else:
                self.channels[room].remove(self.rosters.get(room), key)
        elif room is not None:
            for line in event.text.split("\n"):
                self._text("NOTICE", SERVER, room, line, None)
        else:
            self.server_notice(event.text)

    def _renamed(self, old: str, new: str) -> None:
        """C{old} is now C{new}: one NICK, if this client shares a channel with them."""
        key, new_key = name_key(old), name_key(new)
        told = False
        for channel, view in self.channels.items():
            roster = self.rosters.get(channel)
            if view.has(roster, key) and not view.has(roster, new_key):
                view.remove(roster, key)
                view.add(roster, new_key, new)
                told = True
        if told:
            self.send("NICK", wire.nick_of(new), prefix=mask(old))

    def _presence(self, event: Presence) -> None:
        """A channel's member-list update as JOIN, PART and QUIT lines: what it changed
        (worked out once for every connection, L{Rosters}), less what this client was
        told already.

        None for an update of a crowded channel (more than C{crowd_size} members before or
        after it), as in a large IRC network's big channels (an auditorium): telling each
        of n clients of everyone who came would be n² lines at once, a stall for every
        message behind them. NAMES and WHO say who is there; the view catches up silently,
        and lines resume from there once the channel is no longer crowded."""
        if not event.update:
            self.server_notice(f"online ({len(event.names)}): " + ", ".join(event.names))
            return
        channel = event.room or self.channels_api.lobby
        view = self.channels.get(channel)
        if view is None or self.session is None:
            return
        roster = self.rosters.get(channel)
        change = roster.change(event, event.names)
        if change.seq <= view.seq:
            return  # older than the names this client was shown
        if change.size > self.room.config.crowd_size:
            view.seq, view.missing, view.extra = change.seq, None, None
            return
        me = self.session.user.key
        now = roster.names
        missing = view.missing or ()
        extra = view.extra or {}
        gone = [(k, n) for k, n in change.gone if k not in missing and k != me]
        joined = [(k, n) for k, n in change.joined if k not in extra and k != me]
        if extra:
            gone += [(k, n) for k, n in extra.items() if k not in now and k != me]
        if missing:
            joined += [(k, now[k]) for k in missing if k in now and k != me]
        view.seq, view.missing, view.extra = change.seq, None, None
        write = self.output.write
        for key, name in gone:
            if key in change.online(self.room.online):  # still here: left this room only
                write(change.line("PART", channel, name, _about))
                continue
            for shown, other in self.channels.items():  # a QUIT leaves every channel
                if other is not view:
                    other.remove(self.rosters.get(shown), key)
            write(change.line("QUIT", "left the chat", name, _about))
        for _key, name in joined:
            write(change.line("JOIN", channel, name, _about))

    def _identity(self, event: Identity) -> None:
        nick = wire.nick_of(event.name)
        if nick == self.nick:
            return
        old = self.nick
        old_key = name_key(wire.name_of(old))
        for channel, view in self.channels.items():
            roster = self.rosters.get(channel)
            view.remove(roster, old_key)
            view.add(roster, name_key(event.name), event.name)
        self.send("NICK", nick, prefix=f"{old}!{USER}@{SERVER}")
        self.nick = nick


UNCOUNTED = frozenset(("PING", "PONG", "CAP", "QUIT"))
BEFORE_REGISTRATION = frozenset(
    ("CAP", "PASS", "NICK", "USER", "AUTHENTICATE", "PING", "PONG", "QUIT")
)


def _about(command: str, param: str, name: str) -> bytes:
    """C{:name!chat@chatd COMMAND param}, encoded: the same for every client told."""
    return wire.format_line(command, [param], mask(name)).encode("utf-8", "replace") + b"\r\n"


def _pieces(command: str, prefix: str, target: str, text: str) -> list[str]:
    """C{text} in pieces that fit one line each after C{:prefix COMMAND target :}."""
    head = wire.utf8_len(f":{prefix} {command} {target} :")
    return wire.split_text(text, wire.LINE_BYTES - 2 - head)


class IRCFactory(Factory):
    """The IRC door; away messages are shared by its connections (chatd has no away)."""

    protocol = IRCDoor

    def __init__(self, room: Room) -> None:
        self.room = room
        self.turn = Turn(room.clock)
        self.channels = Channels(room)
        self.rosters = Rosters()  # each channel's members, as its latest update said
        self.away: dict[str, str] = {}  # name key -> away message
        self.doors: set[IRCDoor] = set()

    def deliver_all(self, sessions: tuple[Session, ...], event: Event) -> None:
        """L{IRCDoor.deliver} to many of this door's sessions at once: a fan-out.

        A channel's message is encoded once per render key (the tag capabilities a client
        asked for) and each key's bytes go to its clients with one L{Turn.write_all}: a
        recipient costs a step of one loop rather than a few calls. Who gets nothing is as
        in L{IRCDoor._message}: a client not showing the channel, one that is closing, and
        the sender without echo-message; a client not welcomed yet keeps the message for
        its welcome (L{IRCDoor.early}). Anything else (whispers, member lists, notices,
        history) is per client: L{IRCDoor.deliver} each.
        """
        if type(event) is not Message or event.to is not None:
            deliver(sessions, event)
            return
        room = event.room
        origin = event.origin
        quiet = None  # the sender's own connection, unless it asked for its echo
        if origin is not None:
            sender = getattr(origin, "client", None)
            if getattr(sender, "session", None) is origin and "echo-message" not in getattr(
                sender, "caps", ()
            ):
                quiet = sender
        groups: dict[str, list[Output]] = {}  # render key -> the outputs that read it
        renderers: dict[str, IRCDoor] = {}  # render key -> a client that encodes it
        for session in sessions:
            client = session.client
            if client.early is not None:
                client.early.append(event)  # told at the welcome, in order
            elif client.gone or client is quiet or room not in client.channels:
                continue
            else:
                key = client.render_key
                outputs = groups.get(key)
                if outputs is None:
                    groups[key] = [client.output]
                    renderers[key] = client
                else:
                    outputs.append(client.output)
        for key, outputs in groups.items():
            data = event.rendered(key, renderers[key]._rendered)
            if data:
                self.turn.write_all(outputs, data)

    def tell_away(self, source: IRCDoor, name: str, text: str) -> None:
        """away-notify: the other IRC clients that asked hear of it."""
        for door in self.doors:
            if door is not source and door.welcomed and "away-notify" in door.caps:
                door.send("AWAY", *([text] if text else []), prefix=mask(name))
