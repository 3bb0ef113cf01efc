"""The Room: one protocol-neutral chat service shared by every door.

Doors hand it text and a L{Client} to deliver events to; it never sees bytes. It knows who
is online, what their names are, and who gets which event.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd import text as textrules
from chatd.accounts import Accounts
from chatd.audit import AuditLog
from chatd.bus import PRESENCE, Bus, LocalBus, Undelivered
from chatd.bus.wire import from_wire, to_wire
from chatd.commands import CommandError, Context, Registry, UsageError
from chatd.config import Config
from chatd.events import Error, Event, History, Identity, Message, Notice, Presence
from chatd.flood import Flood
from chatd.guestnames import guest_name
from chatd.moderation import Moderation, reporter_key
from chatd.ratelimit import duration
from chatd.store import Account, NameTaken, Store, StoreUnavailable

log = Logger(namespace="chatd.room")

_NAME = re.compile(r"[^\W][\w.-]*\Z")
_NOT_NAME = re.compile(r"[^\w.-]+|^[.-]+")
NOT_SAVED = "your message could not be saved, so nobody got it; try again"
LOGIN_FIRST = "log in first: /login <name> <password>, or /register <name> <password>"
PURGE_EVERY = 60.0  # seconds between removals of expired history
DELIVERED_KEPT = 4096  # public message ids remembered, so none is shown twice
RECOVER_LIMIT = 1000  # messages fetched from the store after the bus lost some, at most
ANY_ID = 2**63 - 1  # no upper bound on ids (the largest integer both databases store)
EVENT = "event"  # the bus kind for events shown on every node
MODERATION = "moderation"  # the bus kind for reports and mutes
SHUTTING_DOWN = "the server is shutting down"
GOODBYE_WAIT = 5.0  # seconds a stopping server waits for pending saves before saying goodbye
CLAIM = "claim"  # the bus kind for "my user has this name", when two nodes gave out one
ACCOUNT = "account"  # the bus kind for a new account's name: no guest elsewhere may take it


def _crowd_text(names: list[str], verb: str, count: int | None = None) -> str:
    """C{"Ann, Bob, Cy and 4 others joined"}: C{count} people in all, the first few named."""
    count = len(names) if count is None else count
    shown = ", ".join(names[:3])
    if count > 3:
        shown += f" and {count - 3} other{'s' if count > 4 else ''}"
    return f"{shown} {verb}"


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

    __slots__ = ("id", "client", "user", "since", "lines", "token", "closing")

    _ids = itertools.count(1)

    def __init__(self, client: Client, user: User, since: float) -> None:
        self.id = next(Session._ids)
        self.client = client
        self.user = user
        self.since = since
        self.lines = 0
        # The token /login made for this device; /logout cancels it. Tokens from /register
        # and /auth may be shared with other devices (minechat has no other), so they stay.
        self.token: str | None = None
        self.closing = False  # said goodbye: what it sends after that is ignored

    @property
    def name(self) -> str:
        return self.user.name

    def deliver(self, event: Event) -> None:
        self.client.deliver(event)

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.user.name} {self.client.door} {self.client.peer}>"


class Room(Service):
    """Sessions, names, presence, broadcast, whispers, accounts and history.

    @ivar store: the L{chatd.store.Store}; commands may use it too (its key/value cache).
    """

    name = "room"

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        commands: Registry,
        store: Store,
        in_thread: Callable[..., defer.Deferred[Any]],
        namer: Callable[[], str] = guest_name,
        audit: AuditLog | None = None,
        bus: Bus | None = None,
    ) -> None:
        """@param in_thread: runs a slow function (a password hash) off the reactor thread.
        @param bus: how this node hears the other nodes of the room; alone by default.
        """
        self.config = config
        self.clock = clock
        self.commands = commands
        self.store = store
        self.accounts = Accounts(store, clock, in_thread)
        # Registered names are reserved: casefolded name -> the account's spelling.
        self.account_names = {name.casefold(): name for name in store.account_names}
        self.last_id = store.last_id  # the newest public message delivered (or in history)
        self.namer = namer
        self.audit = audit
        self.users: dict[str, User] = {}  # casefolded name -> user
        self.sessions: tuple[Session, ...] = ()  # replaced, never mutated: safe to iterate
        self.listeners: tuple[Client, ...] = ()  # passive read-only clients, not users
        self.flood = Flood(config, clock, self._in_order)
        self.moderation = Moderation(config, clock)
        self.started = clock.seconds()
        self.messages_sent = 0
        self.newest_id = store.last_id  # the last id given to a message
        # Deliveries in the order they were decided: a message waits for its save, and
        # whatever the room says after it waits behind it. Entries: [ready, action].
        self._outbox: deque[list[Any]] = deque()
        self._presence_call: Any = None  # the pending member-list update, if any
        self._crowd: dict[str, list[str]] = {"joined": [], "left": []}  # not yet announced
        self._crowd_call: Any = None
        self._purger = task.LoopingCall(self._purge)
        self._purger.clock = clock
        # Public message ids already shown here: the bus and recovery may both bring one.
        self._delivered: set[int] = set()
        self._delivered_order: deque[int] = deque()
        # More than a Redis outage can replay: what a node kept for the others (max_pending),
        # and what the stream kept for this node (backlog).
        self._kept = max(DELIVERED_KEPT, 2 * config.max_pending + config.backlog)
        self.elsewhere: dict[str, str] = {}  # casefolded name -> users on the other nodes
        # The newest public id heard from the other nodes. Ours go out meanwhile, so the
        # bus's own last_id can pass ids it lost; recovery starts from this one too.
        self.heard_id = store.last_id
        # Public messages are shown in id order: every one up to shown_through has been;
        # ids given to whispers are skipped over.
        self.shown_through = store.last_id
        self._not_public: set[int] = set()
        # Settles which of two nodes' users keeps a name both were given (L{_claimed}).
        self.node = config.node or uuid.uuid4().hex
        self.bus = bus or LocalBus()
        self.bus.last_id = max(self.bus.last_id, store.last_id)
        self.bus.subscribe(self._from_bus)
        self.bus.on_gap(self._recover)
        self.moderation.share = lambda change: self._tell_nodes(MODERATION, change)
        # Dead nodes drop out of the bus's presence on their own: look again now and then.
        self._presence = task.LoopingCall(self._refresh_presence)
        self._presence.clock = clock

    def startService(self) -> None:
        super().startService()
        self.started = self.clock.seconds()
        self.store.start()
        self._purger.start(PURGE_EVERY)
        self._presence.start(self.config.presence_ttl, now=False)
        for cmd in self.commands:
            if cmd.setup is not None:
                try:
                    cmd.setup(self)
                except Exception:
                    log.failure("Setting up /{name} failed", name=cmd.name)

    def stopService(self) -> Any:
        for loop in (self._purger, self._presence):
            if loop.running:
                loop.stop()
        for call in (self._presence_call, self._crowd_call):
            if call is not None and call.active():
                call.cancel()
        for user in list(self.users.values()):
            if user.account is not None:
                self._remember_seen(user.account)
        super().stopService()
        sessions, listeners = tuple(self.sessions), self.listeners
        for session in sessions:
            session.closing = True  # what they type now would not be saved or audited
        said: list[bool] = []

        def goodbye() -> None:
            if said:
                return
            said.append(True)
            self._deliver(sessions, Notice(SHUTTING_DOWN))  # a telnet user sees no close reason
            for client in (*(s.client for s in sessions), *listeners):
                client.close(SHUTTING_DOWN)

        self._in_order(goodbye)  # after the messages still being saved...
        self.clock.callLater(GOODBYE_WAIT, goodbye)  # ...unless the store stopped answering
        return self.store.close()

    # -- connections ------------------------------------------------------------------------

    def connect(self, client: Client) -> Session:
        """A door has a new connection: give it a guest name and tell everyone.

        Over a flood cap the client is told why and closed; the session returned then is
        never in the room, and what it sends is ignored.
        """
        now = self.clock.seconds()
        refusal = self.flood.admit(client)
        if refusal is not None:
            log.info(
                "refused {peer} ({door}): {why}", peer=client.peer, door=client.door, why=refusal
            )
            client.deliver(Error(refusal))
            client.close(refusal)
            return Session(client, User("", since=now), now)
        user = User(self._free_guest_name(), since=now)
        session = Session(client, user, now)
        self._add(session)
        log.info("{session} connected", session=session)
        session.deliver(Identity(user.name))
        self.tell(
            session,
            f"Welcome to chatd, {user.name}! {self.online_count()} online. "
            "Type a message and press Enter; /help lists the commands.",
        )
        self._crowd_moved("joined", user.name)
        self.presence_changed()
        return session

    def disconnect(self, session: Session, reason: str = "left") -> None:
        """A door's connection is gone (or was closed); forget it."""
        self.flood.closed(session.client)
        if session not in session.user.sessions:
            return
        self._remove(session)
        log.info("{session} disconnected: {reason}", session=session, reason=reason)
        if not session.user.sessions:
            self.moderation.guest_gone(session.user)
        if not session.user.sessions and self.running:
            # While stopping, nobody is told of each leave: that would be n notices for n.
            if session.user.account is not None:
                self._remember_seen(session.user.account)
            self._crowd_moved("left", session.user.name)
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
        if session.closing:
            return None
        session.lines += 1
        if not self.flood.line(session.client):
            return None
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
        if not self._may_speak(session):
            return None
        return self.say(session, line)

    def _may_speak(self, session: Session) -> bool:
        """Take one message from the user's allowance, or say why they may not speak."""
        if session.user.account is None and self.config.login_required:
            self.tell_error(session, LOGIN_FIRST)
            return False
        refusal = self.moderation.take(session.user)
        if refusal is not None:
            self.tell_error(session, refusal)
            return False
        return True

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
        if cmd.counted and not self._may_speak(session):
            return None
        ctx = Context(self, session, word)
        try:
            result = cmd(ctx, args)
        except Exception as e:
            if cmd.counted:
                self.moderation.undo(session.user)  # nothing was sent
            self._command_failed(ctx, cmd, e)
            return None
        if isinstance(result, defer.Deferred):

            def failed(f: Any) -> None:
                if cmd.counted:
                    self.moderation.undo(session.user)  # nothing was sent
                self._command_failed(ctx, cmd, f.value, f)

            result.addErrback(failed)
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
        """A public message from this session to everyone, once it is safely in history.

        The store saves messages in id order and fires in that order, so everyone receives
        them in id order, and nothing anyone has seen can be lost by a crash. With several
        nodes, those other nodes saved just before it are shown first (L{_in_id_order}).
        """
        self._announce_crowd()
        user = session.user
        self.newest_id = id = self.newest_id + 1
        message = Message(id, self.clock.seconds(), user.name, text, None, session)
        self.messages_sent += 1
        entry = [False, lambda: self._publish(message)]
        self._outbox.append(entry)

        def failed(failure: Any) -> None:
            if not failure.check(StoreUnavailable):  # an outage: the store logs it once
                log.failure("saving a message from {session} failed", failure, session=session)
            entry[1] = lambda: self._deliver((session,), Error(NOT_SAVED))

        def saved(stored: Message) -> defer.Deferred[None] | None:
            # A cluster's store may renumber it, past messages this node has not seen yet.
            return self._in_id_order(entry, stored, self._publish)

        def done(_: object) -> None:
            entry[0] = True
            self._drain()

        self.store.add_message(message).addCallbacks(saved, failed).addBoth(done)
        return message

    def _in_order(self, action: Callable[[], None]) -> None:
        """Run C{action} now, or after the messages still being saved if there are any."""
        if self._outbox:
            self._outbox.append([True, action])
        else:
            action()

    def _drain(self) -> None:
        outbox = self._outbox
        while outbox and outbox[0][0]:
            try:
                outbox.popleft()[1]()
            except Exception:  # one broken delivery must not hold up everything after it
                log.failure("a delivery from the outbox failed")

    def _new_id(self) -> int:
        """An id that no public message will have (a whisper's)."""
        self.newest_id += 1
        if self.newest_id == self.shown_through + 1:
            self.shown_through = self.newest_id
        else:
            self._not_public.add(self.newest_id)
        return self.newest_id

    def _in_id_order(
        self, entry: list[Any], message: Message, show: Callable[[Message], object]
    ) -> defer.Deferred[None] | None:
        """Make C{entry} show C{message}, after the public messages below its id that this
        node has not shown (other nodes saved them; the bus has not brought them yet).

        Ids become visible in the store in id order, so once C{message} is saved, or heard
        of, everything below it can be read; when this node has shown every id below it
        (the usual case) nothing is read.
        """
        through = self.shown_through
        if message.id <= through + 1:
            entry[1] = lambda: show(message)
            return None
        since = self.clock.seconds() - self.config.history_ttl
        d = self.store.messages(through, message.id - 1, since, RECOVER_LIMIT)

        def fetched(missed: list[Message]) -> None:
            def action() -> None:
                for m in missed:
                    self._show(m)
                self._shown_through(message.id - 1)
                show(message)

            entry[1] = action

        def failed(failure: Any) -> None:
            log.failure("reading the messages before {id} failed", failure, id=message.id)
            entry[1] = lambda: show(message)

        return d.addCallbacks(fetched, failed)

    def _shown_through(self, id: int) -> None:
        """Every public message up to C{id} has been shown (or has no id of its own)."""
        if id > self.shown_through:
            self.shown_through = id
            self._not_public = {i for i in self._not_public if i > id}

    def _publish(self, message: Message) -> None:
        """A message of ours is saved: show it here (unless the store brought it already),
        then tell the other nodes."""
        self._show(message)
        self._tell_nodes(EVENT, to_wire(message))

    def _show(self, message: Message) -> None:
        """Fan out a public message unless it was shown already."""
        id = message.id
        if id in self._delivered:
            return
        if id == self.shown_through + 1:
            self.shown_through = id
            while self.shown_through + 1 in self._not_public:
                self._not_public.discard(self.shown_through + 1)
                self.shown_through += 1
        self._delivered.add(id)
        self._delivered_order.append(id)
        if len(self._delivered_order) > self._kept:
            self._delivered.discard(self._delivered_order.popleft())
        self.last_id = max(self.last_id, id)
        self.newest_id = max(self.newest_id, id)
        self.bus.last_id = max(self.bus.last_id, id)
        self.fanout(message)

    def whisper(self, session: Session, to: str, text: str) -> Message:
        """A private message: every device of the recipient and of the sender sees it."""
        self._announce_crowd()
        target = self.find(to)
        remote = self.elsewhere.get(to.casefold())
        account = self.account_names.get(to.casefold())
        if target is None and remote is None and account is None:
            raise CommandError(f"nobody called {to} is online; /list shows who is")
        if target is session.user:
            raise CommandError("you cannot whisper to yourself")
        text = textrules.clean(text)
        if not text:
            raise UsageError("nothing to send")
        name = target.name if target is not None else remote or account
        assert name is not None
        message = Message(
            self._new_id(), self.clock.seconds(), session.user.name, text, name, session
        )
        self.messages_sent += 1
        if target is None and remote is None:
            self._keep_for_later(session, message)
            return message
        recipients = (*(target.sessions if target else ()), *session.user.sessions)
        self._in_order(lambda: self._deliver(recipients, message))
        # Always: the recipient, or the sender's other devices, may be on another node.
        self._tell_nodes(EVENT, to_wire(message))
        return message

    def _keep_for_later(self, session: Session, message: Message) -> None:
        """A whisper to an account that is offline: delivered at its next login."""

        def kept(_: object) -> None:
            self.tell_user(session.user, message)
            self.tell(session, f"{message.to} is offline and will get it when they log in")

        def failed(failure: Any) -> None:
            log.failure("keeping a whisper for {to} failed", failure, to=message.to)
            self.tell_error(session, f"your message to {message.to} could not be kept; try again")

        self.store.keep_whisper(message.to, message).addCallbacks(kept, failed)

    def rename(self, user: User, new: str) -> None:
        if user.account is not None and new.casefold() != user.account.casefold():
            raise CommandError(
                "your name is your account's; /logout to chat as a guest under another name"
            )
        problem = self.name_problem(new, user)
        if problem is not None:
            raise CommandError(problem)
        self._renamed(user, new)

    def _renamed(self, user: User, new: str, why: str | None = None) -> None:
        """Give C{user} the name C{new} and tell everyone; C{why} tells the user instead,
        when the room chose the name for them."""
        self._announce_crowd()  # joins of this turn under the name they joined with
        old = user.name
        self._rename_user(user, new)
        for s in user.sessions:
            s.deliver(Identity(new, user.account))
        if why is not None:
            self.tell_user(user, Notice(why))
        if why is None:
            self.notice_all(f"{old} is now known as {new}")
        else:  # another user, elsewhere, keeps the name
            self.notice_all(f"the other {old} is now known as {new}", skip={new.casefold()})
        self.presence_changed()

    def name_problem(self, name: str, user: User | None = None) -> str | None:
        """Why C{name} cannot be taken (by C{user}), or None when it can."""
        limit = self.config.max_name_length
        if not 2 <= len(name) <= limit:
            return f"a name has 2 to {limit} characters"
        if not _NAME.match(name):
            return "a name has letters, digits, '.', '-' or '_', and starts with a letter or digit"
        owner = self.account_names.get(name.casefold())
        if owner is not None and (user is None or user.account != owner):
            return (
                f"the name {owner} belongs to an account; /login {owner} <password> if it is yours"
            )
        holder = self.users.get(name.casefold())
        if (holder is not None and holder is not user) or (
            holder is None and name.casefold() in self.elsewhere
        ):
            return f"the name {name} is taken; pick another"
        return None

    def find(self, name: str) -> User | None:
        return self.users.get(name.casefold())

    def online_count(self) -> int:
        return len(self.users.keys() | self.elsewhere.keys())

    def online(self) -> list[str]:
        """Everyone in the room, on this node and (as last heard) on the others."""
        names = {**self.elsewhere, **{key: u.name for key, u in self.users.items()}}
        return sorted(names.values(), key=str.casefold)

    def who(self) -> defer.Deferred[list[str]]:
        """C{/list}: everyone, asked of the bus now; the last answer if it cannot tell."""
        d = self.bus.online()
        d.addCallback(self._heard)
        d.addErrback(lambda f: log.warn("presence unknown: {e}", e=f.getErrorMessage()))
        return d.addCallback(lambda _: self.online())

    # -- accounts ---------------------------------------------------------------------------

    def register(self, session: Session, name: str, password: str) -> defer.Deferred[str]:
        """C{/register}: a new account called exactly C{name}; fires with its token."""
        if session.user.account is not None:
            raise CommandError(f"you are logged in as {session.user.account}; /logout first")
        shortest = self.config.min_password_length
        if len(password) < shortest:
            raise CommandError(f"a password has at least {shortest} characters")
        problem = self.name_problem(name, session.user)
        if problem is not None:
            raise CommandError(problem)
        return self._create(session, name, password)

    def register_account(
        self, session: Session, nickname: str, password: str | None = None
    ) -> defer.Deferred[tuple[str, str]]:
        """A new account named C{nickname}, or a free variant of it; fires with (name, token).

        Without a password the account logs in with its token only (minechat).
        """
        name = self._free_variant(nickname, session.user)
        return self._create(session, name, password).addCallback(lambda token: (name, token))

    def _free_variant(self, nickname: str, user: User) -> str:
        limit = self.config.max_name_length
        base = _NOT_NAME.sub("", nickname).lstrip(".-")[:limit]
        if len(base) < 2:
            return self._free_guest_name()
        for n in itertools.count(1):
            suffix = str(n) if n > 1 else ""
            name = base[: limit - len(suffix)] + suffix
            if self.name_problem(name, user) is None:
                return name
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(self, session: Session, name: str, password: str | None) -> defer.Deferred[str]:
        key = name.casefold()
        self.account_names[key] = name  # reserved now: nobody takes it while the hash runs
        d = defer.ensureDeferred(self.accounts.create(name, password, self.last_id))

        def created(token: str) -> str:
            log.info("{session} registered {name}", session=session, name=name)
            self._login(session, name, token, seen=None)
            self._tell_nodes(ACCOUNT, {"name": name})
            return token

        def failed(failure: Any) -> Any:
            if self.account_names.get(key) == name:
                del self.account_names[key]
            failure.trap(NameTaken)
            raise CommandError(f"the name {name} belongs to an account; pick another")

        return d.addCallbacks(created, failed)

    def login(self, session: Session, name: str, password: str) -> defer.Deferred[None]:
        """C{/login}: log this session in to an account with a password."""

        async def check() -> None:
            account, token = await self.accounts.with_password(name, password, session.client.peer)
            self._login(session, account.name, token, seen=account.last_seen)
            if session.user.account == account.name:
                session.token = token  # this device's own: /logout cancels it

        return defer.ensureDeferred(check())

    def login_with_token(self, session: Session, token: str) -> defer.Deferred[str | None]:
        """Log in with a token; fires with the account name, or None when it is unknown.

        Fails with L{CommandError} when this address has failed too often lately.
        """

        async def check() -> str | None:
            account: Account | None = await self.accounts.with_token(token, session.client.peer)
            if account is None:
                return None
            self._login(session, account.name, token, seen=account.last_seen)
            return account.name

        return defer.ensureDeferred(check())

    def _login(self, session: Session, name: str, token: str | None, seen: int | None) -> None:
        """Move C{session} to the account's user (one user, however many devices).

        @param seen: the last message id the account saw; what came after it is sent when
            the account was offline. None sends nothing (a new account).
        """
        old = session.user
        if session not in old.sessions:
            return  # the connection went while the password was checked
        session.token = None
        if old.account == name:
            session.deliver(Identity(name, name, token))
            return
        if old.account is not None and len(old.sessions) == 1:
            self._remember_seen(old.account)
        cancelled = self.moderation.guest_gone(old)
        if cancelled:
            self.tell(session, cancelled)
        target = self.users.get(name.casefold())
        online = target is not None and target is not old and target.account == name
        if online:
            assert target is not None
            if self._detach(session):
                self.notice_all(f"{old.name} is now {name}", exclude=session)
            target.sessions.append(session)
            session.user = target
        elif len(old.sessions) == 1:
            was = old.name
            self._rename_user(old, name)
            old.account = name
            if was != name:
                self.notice_all(f"{was} is now {name}", exclude=session)
        else:
            self._detach(session)
            self._attach(session, User(name, self.clock.seconds(), account=name))
            self.notice_all(f"{name} joined", exclude=session)
        session.deliver(Identity(name, name, token))
        self.presence_changed()
        if seen is not None and not online:
            self._catch_up(session, name, seen)

    def logout(self, session: Session) -> None:
        """This session becomes a guest again, and the token /login gave it stops working;
        the account's other devices stay logged in."""
        user = session.user
        account = user.account
        if account is None:
            raise CommandError("you are not logged in")
        guest = self._free_guest_name()
        if len(user.sessions) == 1:
            self._remember_seen(account)
            self._rename_user(user, guest)
            user.account = None
            self.notice_all(f"{account} is now {guest}", exclude=session)
        else:
            self._detach(session)
            self._attach(session, User(guest, self.clock.seconds()))
            self.notice_all(f"{guest} joined", exclude=session)
        session.deliver(Identity(guest))
        self.presence_changed()
        token, session.token = session.token, None
        if token is not None:

            def failed(failure: Any) -> None:
                log.failure("revoking the token of {session} failed", failure, session=session)
                self.tell_error(
                    session,
                    "you are logged out here, but the login token of this device could not be "
                    "cancelled (the database is unreachable); it still logs in",
                )

            self.accounts.revoke(token).addErrback(failed)

    def _rename_user(self, user: User, name: str) -> None:
        if self.users.get(user.name.casefold()) is user:
            del self.users[user.name.casefold()]
        user.name = name
        self.users[name.casefold()] = user

    def _detach(self, session: Session) -> bool:
        """Take C{session} from its user; True when that user has no session left."""
        user = session.user
        user.sessions.remove(session)
        if user.sessions:
            return False
        if self.users.get(user.name.casefold()) is user:
            del self.users[user.name.casefold()]
        return True

    def _attach(self, session: Session, user: User) -> None:
        user.sessions.append(session)
        session.user = user
        self.users[user.name.casefold()] = user

    def _remember_seen(self, account: str) -> None:
        d = self.store.set_last_seen(account, self.last_id)
        d.addErrback(lambda f: log.failure("saving what {a} saw failed", f, a=account))

    def _catch_up(self, session: Session, account: str, seen: int) -> None:
        """Send what the account missed: public messages since C{seen}, kept whispers."""
        since = self.clock.seconds() - self.config.history_ttl

        async def send() -> None:
            missed = await self.store.messages(seen, self.last_id, since, self.config.catch_up)
            if missed:
                session.deliver(History(missed, "missed while you were away"))
            if session in session.user.sessions:
                kept = await self.store.take_whispers(account)
                if kept:
                    self.tell_user(session.user, History(kept, "private messages while away"))

        defer.ensureDeferred(send()).addErrback(
            lambda f: log.failure("catching {a} up failed", f, a=account)
        )

    # -- history ----------------------------------------------------------------------------

    def history(self, limit: int) -> defer.Deferred[list[Message]]:
        """The last C{limit} public messages still inside the history TTL, oldest first.

        Includes the caller's own messages still being saved (the query runs after them),
        and whatever other nodes saved meanwhile, so every node answers alike.
        """
        since = self.clock.seconds() - self.config.history_ttl
        return self.store.messages(0, ANY_ID, since, limit)

    def history_after(self, after_id: int, limit: int) -> defer.Deferred[list[Message]]:
        """The newest C{limit} delivered public messages after id C{after_id}, oldest first.

        To resume a client: messages still being saved reach it live, not twice.
        """
        since = self.clock.seconds() - self.config.history_ttl
        return self.store.messages(after_id, self.last_id, since, limit)

    def _purge(self) -> defer.Deferred[Any]:
        self.moderation.prune(self.clock.seconds())
        d = self.store.purge_messages(self.clock.seconds() - self.config.history_ttl)
        return d.addErrback(lambda f: log.failure("purging old history failed", f))

    # -- delivery ---------------------------------------------------------------------------

    def fanout(self, event: Event) -> None:
        """Deliver one event to every session; a failing door does not stop the others."""
        for session in self.sessions:
            try:
                session.client.deliver(event)
            except Exception:
                log.failure("delivering to {session} failed", session=session)
        for client in self.listeners:
            try:
                client.deliver(event)
            except Exception:
                log.failure("delivering to listener {peer} failed", peer=client.peer)

    # -- listeners: read-only clients (the minechat read port) that are not chat users -------

    def listen(self, client: Client) -> None:
        """Hand C{client} every fanned-out event; it gets no name, notices or /list entry."""
        refusal = self.flood.admit(client)
        if refusal is not None:
            log.info("refused listener {peer}: {why}", peer=client.peer, why=refusal)
            client.close(refusal)
            return
        self.listeners = (*self.listeners, client)

    def unlisten(self, client: Client) -> None:
        self.flood.closed(client)
        self.listeners = tuple(c for c in self.listeners if c is not client)

    def _deliver(self, sessions: tuple[Session, ...], event: Event) -> None:
        for session in sessions:
            try:
                session.client.deliver(event)
            except Exception:
                log.failure("delivering to {session} failed", session=session)

    def _crowd_moved(self, verb: str, name: str) -> None:
        """Joins and leaves of one reactor turn share one notice per kind.

        Each notice goes to everyone, so a crowd arriving at once would cost one broadcast
        per person: n² deliveries. Anything the room says later announces them first.
        """
        self._crowd[verb].append(name)
        if self._crowd_call is None:
            self._crowd_call = self.clock.callLater(0, self._announce_crowd)

    def _announce_crowd(self) -> None:
        if self._crowd_call is None:
            return
        if self._crowd_call.active():
            self._crowd_call.cancel()
        self._crowd_call = None
        for verb, names in self._crowd.items():
            if not names:
                continue
            self._crowd[verb] = []
            if verb != "joined":
                self.notice_all(_crowd_text(names, verb))
                continue
            # Each newcomer hears of the others who came with them, not of themselves.
            self.notice_all(_crowd_text(names, verb), skip={n.casefold() for n in names})
            if len(names) > 1:
                for name in names:
                    user = self.users.get(name.casefold())
                    if user is not None:
                        others = [n for n in names[:4] if n != name][:3]
                        text = _crowd_text(others, verb, len(names) - 1)
                        self.tell_user(user, Notice(text))

    def notice_all(
        self, text: str, exclude: Session | None = None, skip: set[str] = frozenset()
    ) -> None:
        """A notice to everyone (but C{exclude} and the users named in C{skip}), in order."""
        self._announce_crowd()
        recipients = tuple(
            s
            for s in self.sessions
            if s is not exclude and (not skip or s.user.name.casefold() not in skip)
        )
        notice = Notice(text)
        self._in_order(lambda: self._deliver(recipients, notice))
        self._tell_nodes(EVENT, to_wire(notice))

    def presence_changed(self) -> None:
        """Doors with a member list (the browser page) keep it current; text doors skip it.

        The joins and leaves of one reactor turn share one update: a crowd connecting at
        once costs one sorted list per turn, not one per person.
        """
        if self._presence_call is None or not self._presence_call.active():
            self._presence_call = self.clock.callLater(0, self._announce_presence)

    def _announce_presence(self) -> None:
        d = self.bus.set_present([u.name for u in self.users.values()])
        d.addErrback(lambda f: log.failure("announcing who is here failed", f))
        event = Presence(self.online(), update=True)
        self._in_order(lambda: self.fanout(event))

    # -- the other nodes --------------------------------------------------------------------

    def _from_bus(self, kind: str, payload: dict[str, Any]) -> None:
        """Another node published something (in the order it did)."""
        if kind == PRESENCE:
            self._clashes(payload.get("names", []))
            self._refresh_presence()
            return
        handler = {MODERATION: self._moderate, CLAIM: self._claimed, ACCOUNT: self._registered}
        if kind in handler:
            try:
                handler[kind](payload)
            except (KeyError, TypeError, ValueError) as e:
                log.warn("dropped a malformed {kind}: {e!r}", kind=kind, e=e)
            return
        try:
            event = from_wire(payload)
        except ValueError as e:
            log.warn("dropped from the bus: {e}", e=e)
            return
        if isinstance(event, Message) and event.to is None:
            self.heard_id = max(self.heard_id, event.id)
            self._queue_public(event)
        elif isinstance(event, Message):
            users = {self.find(event.to), self.find(event.sender)} - {None}
            recipients = tuple(s for u in users if u is not None for s in u.sessions)
            self._in_order(lambda: self._deliver(recipients, event))
        elif isinstance(event, Notice):
            self._in_order(lambda: self._deliver(self.sessions, event))

    def _queue_public(self, message: Message) -> None:
        """Show another node's public message in order: after what this node is saving,
        and after any lower ids not shown yet."""
        if message.id <= self.shown_through + 1:
            self._in_order(lambda: self._show(message))
            return
        entry: list[Any] = [False, None]
        self._outbox.append(entry)

        def ready(_: object) -> None:
            entry[0] = True
            self._drain()

        d = self._in_id_order(entry, message, self._show)
        assert d is not None
        d.addBoth(ready)

    def _registered(self, payload: dict[str, Any]) -> None:
        """Another node made an account: its name is reserved here too, online or not."""
        self._reserve(str(payload["name"]))

    def _reserve(self, name: str) -> None:
        """An account's name: nobody else takes it, and a guest here who has it yields."""
        self.account_names[name.casefold()] = name
        user = self.users.get(name.casefold())
        if user is not None and user.account is None:
            self._claimed({"name": name, "node": "", "account": True})

    def _clashes(self, names: list[str]) -> None:
        """Another node's users (its presence): claim the names our guests share with them.

        Two nodes can give out one name at the same moment (each checks what it has heard
        so far). Guests claim; an account on two nodes is usually one person's two devices,
        and when a guest elsewhere has its name, that guest's node claims.
        """
        for name in names:
            user = self.users.get(str(name).casefold())
            if user is not None and user.account is None:
                self._claim(user)

    def _claim(self, user: User) -> None:
        payload = {"name": user.name, "node": self.node, "account": user.account is not None}
        self._tell_nodes(CLAIM, payload)

    def _claimed(self, payload: dict[str, Any]) -> None:
        """Another node's user has the name of one of ours: exactly one of them yields.

        Both nodes rank the two users alike: a guest yields to an account (an account's
        name is its own), and of two guests, the one on the node whose id sorts later. An
        account on two nodes is one account (the store keeps names unique): nobody yields.
        The winner claims back, since the loser may not have heard of it.
        """
        name, node, account = str(payload["name"]), str(payload["node"]), bool(payload["account"])
        user = self.users.get(name.casefold())
        if user is None or (account and user.account is not None):
            return  # renamed or gone meanwhile, or one account's devices
        mine, theirs = (user.account is None, self.node), (not account, node)
        if mine < theirs:
            self._claim(user)
            return
        if mine == theirs:
            return  # two nodes with one id: a configuration error, nothing to settle
        self.elsewhere[name.casefold()] = name
        new = self._free_guest_name()
        log.info("{old} on node {node} too: renamed {new}", old=user.name, node=node, new=new)
        why = f"someone on another server already had the name {name}; you are now {new}"
        self._renamed(user, new, why=f"{why} (/nick picks another)")

    def report_elsewhere(self, reporter: User, name: str) -> None:
        """C{/report} of a user on another node: that node counts it (it knows their
        address) and tells every node when they are muted."""
        if not self.config.reports_to_mute:
            raise CommandError("reports are switched off on this server")
        self._tell_nodes(MODERATION, {"report": name, "by": reporter_key(reporter)})

    def announce_mute(self, user: User, seconds: float) -> None:
        self.notice_all(f"{user.name} was muted for {duration(seconds)} after complaints")

    def _moderate(self, payload: dict[str, Any]) -> None:
        if "report" not in payload:
            self.moderation.heard(payload)
            return
        target = self.find(str(payload["report"]))
        if target is None:
            return  # not ours, or gone
        try:
            seconds = self.moderation.report_by(tuple(payload["by"]), target)
        except CommandError as e:
            log.info("a report from another node did not count: {e}", e=e)
            return
        if seconds is not None:
            self.announce_mute(target, seconds)

    def _tell_nodes(self, kind: str, payload: dict[str, Any]) -> None:
        d = self.bus.publish(kind, payload)
        d.addErrback(lambda f: f.trap(Undelivered))  # an outage: the bus logs it once
        d.addErrback(lambda f: log.failure("publishing a {kind} failed", f, kind=kind))

    def _refresh_presence(self) -> defer.Deferred[None]:
        """Ask the bus who is where; member lists change only when the answer does."""
        d = self.bus.online().addCallback(self._heard)
        return d.addErrback(lambda f: log.warn("presence unknown: {e}", e=f.getErrorMessage()))

    def _heard(self, names: list[str]) -> None:
        elsewhere = {n.casefold(): n for n in names if n.casefold() not in self.users}
        if elsewhere != self.elsewhere:
            self.elsewhere = elsewhere
            event = Presence(self.online(), update=True)
            self._in_order(lambda: self.fanout(event))

    def _recover(self, last_id: int) -> None:
        """The bus may have lost messages after C{last_id}: show them from the store.

        Starts at the last one heard from the bus if that is older: ours, sent meanwhile,
        may be newer than some that were lost. Those shown already are skipped. Our users
        are announced again: a node whose guest got one of their names meanwhile claims it.
        """
        self.presence_changed()
        self.store.read_account_names().addCallbacks(
            self._accounts_known, lambda f: log.failure("reading account names failed", f)
        )
        after_id = min(last_id, self.heard_id)
        since = self.clock.seconds() - self.config.history_ttl
        d = self.store.messages(after_id, ANY_ID, since, RECOVER_LIMIT)

        def show(missed: list[Message]) -> None:
            log.info("recovered {n} messages after id {id}", n=len(missed), id=after_id)
            for message in missed:
                self.heard_id = max(self.heard_id, message.id)
                self._queue_public(message)

        d.addCallbacks(
            show, lambda f: log.failure("recovering after id {id} failed", f, id=after_id)
        )

    def _accounts_known(self, names: list[str]) -> None:
        """Accounts made on other nodes while the bus was cut off are reserved here too."""
        for name in names:
            if name.casefold() not in self.account_names:
                self._reserve(name)

    def tell(self, session: Session, text: str) -> None:
        self._tell(session, Notice(text))

    def tell_error(self, session: Session, text: str) -> None:
        self._tell(session, Error(text))

    def _tell(self, session: Session, event: Event) -> None:
        self._in_order(lambda: self._deliver((session,), event))

    def close(self, session: Session, reason: str) -> None:
        """Close a session once everything it has been told is on its way; from now on,
        what it sends is ignored (lines after C{/exit} in the same packet, say)."""
        session.closing = True
        self._in_order(lambda: session.client.close(reason))

    def tell_user(self, user: User, event: Event) -> None:
        self._in_order(lambda: self._deliver(tuple(user.sessions), event))
