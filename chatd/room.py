"""The Room: one protocol-neutral chat service shared by every door.

Doors hand it text and a L{Client} to deliver events to; it never sees bytes. It knows who
is online, what their names are, and who gets which event.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd import text as textrules
from chatd.audit import AuditLog
from chatd.commands import CommandError, Context, Registry, UsageError
from chatd.config import Config
from chatd.events import Error, Event, Identity, Message, Notice, Presence
from chatd.guestnames import guest_name

log = Logger(namespace="chatd.room")

_NAME = re.compile(r"[^\W][\w.-]*\Z")


class Client(Protocol):
    """What a door offers the Room for one connection."""

    door: str  # "line", "ws", "json", ...
    peer: str  # the remote address, for logs and per-address rules

    def deliver(self, event: Event) -> None: ...

    def close(self, reason: str) -> None: ...


class User:
    """A person in the room: a guest, or an account on any number of sessions (devices).

    Per-person state (name, mute, rate limit) lives here, so another device cannot bypass it.
    """

    __slots__ = ("name", "account", "sessions", "since")

    def __init__(self, name: str, since: float, account: str | None = None) -> None:
        self.name = name
        self.account = account
        self.sessions: list[Session] = []
        self.since = since


class Session:
    """One connection of one user."""

    __slots__ = ("id", "client", "user", "since", "lines")

    _ids = itertools.count(1)

    def __init__(self, client: Client, user: User, since: float) -> None:
        self.id = next(Session._ids)
        self.client = client
        self.user = user
        self.since = since
        self.lines = 0

    @property
    def name(self) -> str:
        return self.user.name

    def deliver(self, event: Event) -> None:
        self.client.deliver(event)

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.user.name} {self.client.door} {self.client.peer}>"


class Room(Service):
    """Sessions, names, presence, broadcast and whispers."""

    name = "room"

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        commands: Registry,
        namer: Callable[[], str] = guest_name,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.commands = commands
        self.namer = namer
        self.audit = audit
        self.users: dict[str, User] = {}  # casefolded name -> user
        self.sessions: tuple[Session, ...] = ()  # replaced, never mutated: safe to iterate
        self.started = clock.seconds()
        self.messages_sent = 0
        self._ids = itertools.count(1)

    def startService(self) -> None:
        super().startService()
        self.started = self.clock.seconds()
        for cmd in self.commands:
            if cmd.setup is not None:
                try:
                    cmd.setup(self)
                except Exception:
                    log.failure("Setting up /{name} failed", name=cmd.name)

    def stopService(self) -> Any:
        for session in self.sessions:
            session.client.close("the server is shutting down")
        return super().stopService()

    # -- connections ------------------------------------------------------------------------

    def connect(self, client: Client) -> Session:
        """A door has a new connection: give it a guest name and tell everyone."""
        now = self.clock.seconds()
        user = User(self._free_guest_name(), since=now)
        session = Session(client, user, now)
        self._add(session)
        log.info("{session} connected", session=session)
        session.deliver(Identity(user.name))
        self.tell(
            session,
            f"Welcome to chatd, {user.name}! {len(self.users)} online. "
            "Type a message and press Enter; /help lists the commands.",
        )
        self.notice_all(f"{user.name} joined", exclude=session)
        self.presence_changed()
        return session

    def disconnect(self, session: Session, reason: str = "left") -> None:
        """A door's connection is gone (or was closed); forget it."""
        if session not in session.user.sessions:
            return
        self._remove(session)
        log.info("{session} disconnected: {reason}", session=session, reason=reason)
        if not session.user.sessions:
            self.notice_all(f"{session.user.name} left")
            self.presence_changed()

    def _add(self, session: Session) -> None:
        user = session.user
        user.sessions.append(session)
        self.users[user.name.casefold()] = user
        self.sessions = (*self.sessions, session)

    def _remove(self, session: Session) -> None:
        user = session.user
        user.sessions.remove(session)
        if not user.sessions:
            self.users.pop(user.name.casefold(), None)
        self.sessions = tuple(s for s in self.sessions if s is not session)

    def _free_guest_name(self) -> str:
        for attempt in range(50):
            name = self.namer()
            if attempt >= 10:
                name = f"{name}{attempt}"
            if self.name_problem(name) is None:
                return name
        raise RuntimeError("no free guest name")  # pragma: no cover - needs 50 clashes

    # -- input ------------------------------------------------------------------------------

    def receive(self, session: Session, line: str) -> Any:
        """One line typed by a user: a command, or a public message."""
        session.lines += 1
        line = textrules.clean(line)
        if not line:
            return None
        if line.startswith("/") and not line.startswith("//"):
            word, _, args = line[1:].partition(" ")
            return self.run(session, word, args.strip())
        if line.startswith("//"):
            line = line[1:]
        else:
            word, _, args = line.partition(" ")
            cmd = self.commands.get(word)
            if cmd is not None and cmd.bare:
                return self.run(session, word, args.strip())
        return self.say(session, line)

    def run(self, session: Session, word: str, args: str) -> Any:
        """Run a command and make sure the user hears about any failure."""
        cmd = self.commands.get(word)
        if cmd is None:
            self.tell_error(session, f"unknown command /{word}; /help lists the commands")
            return None
        log.info(
            "{session} runs /{name} {args}",
            session=session,
            name=cmd.name,
            args=args if cmd.audit_args else "...",
        )
        if self.audit is not None:
            self.audit.record(
                self.clock.seconds(), session, cmd.name, args if cmd.audit_args else "..."
            )
        ctx = Context(self, session, word)
        try:
            result = cmd(ctx, args)
        except Exception as e:
            self._command_failed(ctx, cmd, e)
            return None
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda f: self._command_failed(ctx, cmd, f.value, f))
        return result

    def _command_failed(
        self, ctx: Context, cmd: Any, e: BaseException, failure: Any = None
    ) -> None:
        if isinstance(e, UsageError):
            why = f"{e}; " if str(e) else ""
            self.tell_error(ctx.session, f"{why}usage: {cmd.usage_line}")
        elif isinstance(e, CommandError):
            self.tell_error(ctx.session, str(e))
        else:
            log.failure("/{name} failed", failure, name=cmd.name)
            self.tell_error(
                ctx.session, f"/{cmd.name} failed on the server; please try again later"
            )

    # -- chat -------------------------------------------------------------------------------

    def say(self, session: Session, text: str) -> Message:
        """A public message from this session to everyone."""
        message = Message(
            next(self._ids), self.clock.seconds(), session.user.name, text, None, session
        )
        self.messages_sent += 1
        self.fanout(message)
        return message

    def whisper(self, session: Session, to: str, text: str) -> Message:
        """A private message: every device of the recipient and of the sender sees it."""
        target = self.find(to)
        if target is None:
            raise CommandError(f"nobody called {to} is online; /list shows who is")
        if target is session.user:
            raise CommandError("you cannot whisper to yourself")
        text = textrules.clean(text)
        if not text:
            raise UsageError("nothing to send")
        message = Message(
            next(self._ids), self.clock.seconds(), session.user.name, text, target.name, session
        )
        self.messages_sent += 1
        for s in (*target.sessions, *session.user.sessions):
            s.deliver(message)
        return message

    def rename(self, user: User, new: str) -> None:
        problem = self.name_problem(new, user)
        if problem is not None:
            raise CommandError(problem)
        old = user.name
        del self.users[old.casefold()]
        user.name = new
        self.users[new.casefold()] = user
        for s in user.sessions:
            s.deliver(Identity(new, user.account))
        self.notice_all(f"{old} is now known as {new}")
        self.presence_changed()

    def name_problem(self, name: str, user: User | None = None) -> str | None:
        """Why C{name} cannot be taken (by C{user}), or None when it can."""
        limit = self.config.max_name_length
        if not 2 <= len(name) <= limit:
            return f"a name has 2 to {limit} characters"
        if not _NAME.match(name):
            return "a name has letters, digits, '.', '-' or '_', and starts with a letter or digit"
        holder = self.users.get(name.casefold())
        if holder is not None and holder is not user:
            return f"the name {name} is taken; pick another"
        return None

    def find(self, name: str) -> User | None:
        return self.users.get(name.casefold())

    def online(self) -> list[str]:
        return sorted((u.name for u in self.users.values()), key=str.casefold)

    # -- delivery ---------------------------------------------------------------------------

    def fanout(self, event: Event) -> None:
        """Deliver one event to every session; a failing door does not stop the others."""
        for session in self.sessions:
            try:
                session.client.deliver(event)
            except Exception:
                log.failure("delivering to {session} failed", session=session)

    def notice_all(self, text: str, exclude: Session | None = None) -> None:
        event = Notice(text)
        for session in self.sessions:
            if session is not exclude:
                session.deliver(event)

    def presence_changed(self) -> None:
        """Doors with a member list (the browser page) keep it current; text doors skip it."""
        self.fanout(Presence(self.online(), update=True))

    def tell(self, session: Session, text: str) -> None:
        session.deliver(Notice(text))

    def tell_error(self, session: Session, text: str) -> None:
        session.deliver(Error(text))

    def tell_user(self, user: User, event: Event) -> None:
        for s in user.sessions:
            s.deliver(event)
