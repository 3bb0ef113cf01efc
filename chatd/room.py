"""The Room: one protocol-neutral chat service shared by every door.

Doors hand it text and a L{Client} to deliver events to; it never sees bytes. The Room
wires its collaborators together and owns the message path: a line passes the L{Gate},
becomes a command or a message, is saved, and goes out in order through the L{Outbox}.

Who is here is L{Members}; names are L{Names}; logins are L{Logins}; joins and member
lists are the L{Crowd}; later messages are the L{Scheduler}; other nodes are the L{Link}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd import text as textrules
from chatd.accounts import Accounts
from chatd.audit import AuditLog, bounded
from chatd.bus import Bus
from chatd.cluster import ClusterLink
from chatd.commands import Command, Elsewhere, Registry, RoomInfo, Services, Status
from chatd.config import Config
from chatd.conversation import Conversation, Conversations
from chatd.crowd import Crowd
from chatd.errors import CommandError, UsageError
from chatd.events import Error, Event, Identity, Message, Notice
from chatd.flood import Flood
from chatd.gate import COMMAND, LOGIN, LOGOUT, REGISTER, RENAME, REPORT, SAY, Action, Gate
from chatd.guestnames import guest_name
from chatd.link import Alone, Link
from chatd.logins import Logins
from chatd.members import Members, deliver
from chatd.moderation import Moderation, reporter_key
from chatd.names import Names
from chatd.outbox import Outbox, Slot
from chatd.people import Client, Session, User, name_key
from chatd.ratelimit import duration
from chatd.rooms import Rooms
from chatd.scheduling import Pending, Scheduler, account_of
from chatd.sequence import READ_LIMIT, SHOWN_KEPT, Sequence
from chatd.store import ANY_ID, UNAVAILABLE, Store, StoreUnavailable, log_failed
from chatd.voice import Voice

__all__ = ["Client", "Room", "Session", "User"]

log = Logger(namespace="chatd.room")

NOT_SAVED = "your message could not be saved, so nobody got it; try again"
PURGE_EVERY = 60.0  # seconds between removals of expired history
SHUTTING_DOWN = "the server is shutting down"
MAYBE_STALE = (
    "the other servers did not answer at once: the list that follows may be out of date "
    "(their people as last heard)"
)
GOODBYE_WAIT = 5.0  # seconds a stopping server waits for pending saves before saying goodbye
SCHEDULED = Action("scheduled", speaks=True)  # counted when it was scheduled
ARRIVALS_PER_LINE = 100  # connections named in one "connected" log line at most


class Arrivals:
    """The log's "connected" lines: each connection with its name, door and address, but
    one line for all that arrived in the same reactor turn.

    A log line costs Twisted about 50 µs to format and write, an eighth of a WebSocket
    connect; in a reconnect storm one turn brings dozens, and their line costs about 1 µs
    each. A connection that comes alone is logged alone, as soon as its turn ends.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._held: list[tuple[Session, str]] = []
        self._call: Any = None

    def connected(self, session: Session, how: str = "") -> None:
        """C{session} has joined (C{how}: " with a token", say): logged at the turn's end."""
        self._held.append((session, how))
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Log what is held now: before a departure (it must not come before its arrival)
        and at a stop."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        held, self._held = self._held, []
        if len(held) == 1:
            log.info("{session} connected{how}", session=held[0][0], how=held[0][1])
            return
        for start in range(0, len(held), ARRIVALS_PER_LINE):
            part = held[start : start + ARRIVALS_PER_LINE]
            named = ", ".join(f"{session!r}{how}" for session, how in part)
            log.info("{n} connected: {sessions}", n=len(part), sessions=named)


def owner(user: User) -> Hashable:
    """Whose scheduled messages these are: an account's (any device may send them, and
    they outlive a restart), or one guest's (they go when the guest goes)."""
    return ("account", user.account) if user.account else user


class Room(Service):
    """The chat of one node: sessions, the message path and its collaborators.

    @ivar services: what command plugins share (clock, config, the store's cache).
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
        @param bus: how this node hears the other nodes of the chat; alone without one.
        """
        self.config = config
        self.clock = clock
        self.commands = commands
        self.store = store
        self.audit = audit
        self.bus = bus
        self.members = Members()
        self.outbox = Outbox()
        # More than a Redis outage can replay (each node keeps max_pending events for it).
        remember = max(SHOWN_KEPT, 2 * config.max_pending + config.backlog)
        self.sequence = Sequence(store.last_id, remember)
        self.names = Names(self.members, config.max_name_length, namer, store.account_names)
        self.link: Link = Alone(self.members) if bus is None else ClusterLink(self, bus)
        self.all_rooms = Conversations(
            self.members, config.default_room, config.max_room_name_length
        )
        self.voice = Voice(self.outbox, self.members, self.link, self.all_rooms)
        self.crowd = Crowd(clock, self.members, self.voice, self.link, config)
        self.rooms = Rooms(
            config,
            clock,
            store,
            self.members,
            self.all_rooms,
            self.voice,
            self.crowd,
            self.link,
        )
        self.moderation = Moderation(config, clock, self.link.moderated)
        flood = Flood(config, clock, self.outbox.later)
        self.gate = Gate(config, clock, self.moderation, flood, self.link.moderated)
        self.scheduler = Scheduler(clock, store, config.node, self._send_scheduled)
        self.accounts = Accounts(store, clock, in_thread, config.accounts_per_address_per_hour)
        self.logins = Logins(
            config,
            clock,
            store,
            self.accounts,
            self.members,
            self.names,
            self.voice,
            self.crowd,
            self.sequence,
            self.scheduler,
            self.link,
            self.gate,
            self.rooms,
        )
        self.services = Services(clock, config, store, commands)
        self.arrivals = Arrivals(clock)
        self.started = clock.seconds()
        self.messages_sent = 0
        self._purger = task.LoopingCall(self._purge)
        self._purger.clock = clock

    def startService(self) -> None:
        super().startService()
        self.started = self.clock.seconds()
        self.store.start()
        self._purger.start(PURGE_EVERY)
        self.link.start()
        self.rooms.restore()
        self.scheduler.restore()
        for cmd in self.commands:
            if cmd.setup is not None:
                try:
                    cmd.setup(self.services)
                except Exception:
                    log.failure("Setting up /{name} failed", name=cmd.name)

    def stopService(self) -> Any:
        if self._purger.running:
            self._purger.stop()
        self.link.stop()
        self.crowd.stop()
        self.arrivals.flush()
        for user in list(self.members.users.values()):
            if user.account is not None:
                self.logins.remember_seen(user.account)
        super().stopService()
        sessions, listeners = self.members.sessions, self.members.listeners
        for session in sessions:
            session.closing = True  # what they type now would not be saved or audited
        said: list[bool] = []

        def goodbye() -> None:
            if said:
                return
            said.append(True)
            deliver(sessions, Notice(SHUTTING_DOWN))  # a telnet user sees no close reason
            for client in (*(s.client for s in sessions), *listeners):
                client.close(SHUTTING_DOWN)

        self.outbox.later(goodbye)  # after the messages still being saved...
        self.clock.callLater(GOODBYE_WAIT, goodbye)  # ...unless the store stopped answering
        return self.store.close()

    # -- reload -----------------------------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """Settings changed by a reload (SIGHUP): limits, flood and moderation rules and
        whatever else is read from the config apply from now on."""
        self.config = config
        self.gate.reconfigure(config)
        self.logins.config = config
        self.rooms.config = config
        self.crowd.config = config
        self.all_rooms.max_length = config.max_room_name_length  # default_room: at start only
        self.names.max_length = config.max_name_length
        self.accounts.reconfigure(config.accounts_per_address_per_hour)

    # -- connections ------------------------------------------------------------------------

    def connect(self, client: Client, name: str | None = None) -> Session:
        """A door has a new connection: give it a guest name and tell everyone.

        C{name} is the name it asked for (an IRC nick), taken when it is free and valid
        (L{name_problem}); otherwise it gets a guest name.

        Over a flood cap the client is told why and closed; the session returned then is
        never in the room, and what it sends is ignored.
        """
        now = self.clock.seconds()
        refusal = self.gate.admit(client)
        if refusal is not None:
            log.info(
                "refused {peer} ({door}): {why}", peer=client.peer, door=client.door, why=refusal
            )
            client.deliver(Error(refusal))
            client.close(refusal)
            return Session(client, User("", since=now), now)
        if name is None or self.names.problem(name) is not None:
            name = self.names.guest()
        session = Session(client, User(name, since=now), now)
        session.move(self.all_rooms.default.name)
        self.members.add(session)
        name = session.user.name
        self.arrivals.connected(session)
        session.deliver(Identity(name))
        self.voice.tell(
            session,
            f"Welcome to chatd, {name}! {self.members.online_count()} online. "
            "Type a message and press Enter; /help lists the commands.",
        )
        self.crowd.moved("joined", name)
        return session

    def disconnect(self, session: Session, reason: str = "left") -> None:
        """A door's connection is gone (or was closed); forget it."""
        self.gate.closed(session.client)
        user = session.user
        if session not in user.sessions:
            return
        gone = self.members.remove(session)
        self.arrivals.flush()
        log.info("{session} disconnected: {reason}", session=session, reason=reason)
        if not gone:
            return
        self.logins.guest_gone(user)
        # Out of its rooms; everyone is in the default room, so "left" is told there once.
        self.rooms.gone(user)
        if not self.running:  # while stopping, n leave notices for n people would be wasted
            return
        if user.account is None:
            self.crowd.moved("left", user.name)
        else:
            self.logins.remember_seen(user.account)
            self.crowd.leave_later(user.name)

    def arrive(self, client: Client, token: str | None) -> defer.Deferred[Session]:
        """Like L{connect}, but the token is checked I{before} joining: a returning account
        joins once under its own name, and not at all when it was here a moment ago (its
        "left" waits), so a reload shows others nothing.

        An unknown or refused token joins as a guest, told why; the Deferred never fails.
        """
        if not token:
            return defer.succeed(self.connect(client))

        async def check() -> Session:
            try:
                account = await self.accounts.with_token(token, client.peer)
                problem = "your saved login is no longer valid; log in again"
            except CommandError as e:
                account, problem = None, str(e)
            except StoreUnavailable:  # the store logs the outage once
                account = None
                problem = f"your login could not be checked ({UNAVAILABLE}); log in again"
            except Exception:
                log.failure("checking the token of {peer} failed", peer=client.peer)
                account, problem = None, "your login could not be checked; log in again later"
            if account is None:
                session = self.connect(client)
                self.voice.error(session, problem)
                return session
            return self._arrive_as(client, account, token, "a token")

        return defer.ensureDeferred(check())

    def arrive_with_password(
        self, client: Client, name: str, password: str
    ) -> defer.Deferred[Session]:
        """L{arrive} with an account's name and password (IRC's SASL PLAIN and PASS): the
        account joins once under its own name. Fails with L{CommandError} when the login
        is refused (then nothing joined); a wrong password counts against the Accounts'
        sliding-window limit on failed logins, as on C{/login}."""

        async def check() -> Session:
            account, token = await self.accounts.with_password(name, password, client.peer)
            session = self._arrive_as(client, account, token, "a password")
            if session.user.account == account.name:
                session.token = token  # this device's own, as /login's
            return session

        return defer.ensureDeferred(check())

    def _arrive_as(self, client: Client, account: Any, token: str, how: str) -> Session:
        """Join C{client} as C{account}, whose login was just checked."""
        holder = self.members.find(account.name)
        if holder is not None and holder.account != account.name:
            session = self.connect(client)  # a guest here holds the name a moment: long way
            self.logins.move(session, account.name, token, account.last_seen, account.rooms)
            return session
        now = self.clock.seconds()
        refusal = self.gate.admit(client)
        if refusal is not None:
            client.deliver(Error(refusal))
            client.close(refusal)
            return Session(client, User("", since=now), now)
        name = account.name
        back = holder is not None or self.crowd.returned(name)
        session = Session(client, holder or User(name, now, account=name), now)
        session.move(self.all_rooms.default.name)
        self.members.add(session)
        self.arrivals.connected(session, f" with {how}")
        session.deliver(Identity(name, name, token))
        self.voice.tell(session, f"Welcome back, {name}! {self.members.online_count()} online.")
        if back:
            self.crowd.changed()
        else:
            self.crowd.moved("joined", name)
        if holder is None:
            self.rooms.rejoin(session, account.rooms, quiet=back)
            self.logins.catch_up(session, name, account.last_seen)
        return session

    def listen(self, client: Client) -> None:
        """Hand C{client} every public message of the default room; it gets no name,
        notices or /list entry."""
        refusal = self.gate.admit(client)
        if refusal is not None:
            log.info("refused listener {peer}: {why}", peer=client.peer, why=refusal)
            client.close(refusal)
            return
        self.members.listen(client)

    def unlisten(self, client: Client) -> None:
        self.gate.closed(client)
        self.members.unlisten(client)

    # -- input ------------------------------------------------------------------------------

    def receive(self, session: Session, line: str) -> Any:
        """One line typed by a user: a command, or a public message.

        A connection's lines take effect in the order they were typed: while one of its
        commands is still running (a password being checked, a rate being fetched), the
        lines after it wait for it.
        """
        if session.closing:
            return None
        session.lines += 1
        if not self.gate.line(session):
            return None
        if session.waiting is not None:
            session.waiting.append(line)
            return None
        return self._in_turn(session, line)

    def _in_turn(self, session: Session, line: str) -> Any:
        """Take C{line}; if it started a command still running, what follows waits."""
        result = self._take(session, line)
        if isinstance(result, defer.Deferred) and not result.called:
            session.waiting = deque()

            def finished(outcome: object) -> object:
                self._resume(session)
                return outcome

            result.addBoth(finished)
        return result

    def _resume(self, session: Session) -> None:
        """The running command finished: take the lines typed meanwhile, in order."""
        waiting, session.waiting = session.waiting or deque(), None
        while waiting and not session.closing:
            self._in_turn(session, waiting.popleft())
            if session.waiting is not None:  # another slow command: the rest waits for it
                session.waiting.extend(waiting)
                return

    def _take(self, session: Session, line: str) -> Any:
        """Act on one line: a command, or a public message."""
        line = textrules.clean(line)
        if not line:
            return None
        too_long = self.gate.size(line)
        if too_long is not None:
            self.voice.error(session, too_long)
            return None
        if line.startswith("/") and not line.startswith("//"):
            word, _, args = line[1:].partition(" ")
            return self._run(session, word, args.strip())
        if line.startswith("//"):
            line = line[1:]
        else:
            word, _, args = line.partition(" ")
            cmd = self.commands.get(word)
            if cmd is not None and cmd.bare:
                return self._run(session, word, args.strip())
        if self._refused(session, SAY):
            return None
        return self.say(session, line)

    def accept(self, session: Session) -> bool:
        """Whether to act on a line a door handles itself (an IRC command): it counts
        against the flood caps as a typed line does. A door's keep-alives (PING, PONG)
        and capability talk do not come here."""
        if session.closing:
            return False
        session.lines += 1
        return self.gate.line(session)

    def speak(
        self, session: Session, text: str, to: str | None = None, to_room: str | None = None
    ) -> Message | None:
        """Text that is a message whatever it starts with (IRC's PRIVMSG): public (to the
        room called C{to_room}; None: the current one), or a whisper C{to} someone. The
        rules of a typed line apply (size, mute, rate, login required), not its commands;
        the door counted the line with L{accept}.

        Raises L{CommandError} saying why it was refused; None when nothing was sent.
        """
        if session.closing:
            return None
        text = textrules.clean(text)
        if not text:
            raise UsageError("nothing to send")
        too_long = self.gate.size(text)
        if too_long is not None:
            raise CommandError(too_long)
        self._check(session, SAY)
        if to is None:
            try:
                return self.say(session, text, to_room)
            except CommandError:
                self.gate.refund(session, SAY)  # nothing was sent
                raise
        try:
            return self.whisper(session, to, text)
        except CommandError:
            self.gate.refund(session, SAY)  # nothing was sent
            raise

    def name_problem(self, name: str, session: Session | None = None) -> str | None:
        """Why C{name} cannot be taken (by C{session}'s user), or None when it can."""
        return self.names.problem(name, session.user if session is not None else None)

    def _refused(self, session: Session, action: Action) -> bool:
        """Ask the gate; tell the user why not, if not."""
        refusal = self.gate.check(session, action)
        if refusal is not None:
            self.voice.error(session, refusal)
        return refusal is not None

    def _run(self, session: Session, word: str, args: str) -> Any:
        """Run a command and make sure the user hears about any failure."""
        cmd = self.commands.get(word)
        if cmd is None:
            self.voice.error(session, f"unknown command /{word}; /help lists the commands")
            return None
        shown = args if cmd.audit_args else "..."
        log.info(
            "{session} runs /{name} {args}", session=session, name=cmd.name, args=bounded(shown)
        )
        if self.audit is not None:
            self.audit.record(self.clock.seconds(), session, cmd.name, shown)
        action = SAY if cmd.counted else COMMAND
        if self._refused(session, action):
            return None
        ctx = RoomContext(self, session, word)
        try:
            result = cmd(ctx, args)
        except Exception as e:
            self.gate.refund(session, action)  # nothing was sent
            self._failed(session, cmd, e)
            return None
        if isinstance(result, defer.Deferred):

            def failed(f: Any) -> None:
                self.gate.refund(session, action)  # nothing was sent
                self._failed(session, cmd, f.value, f)

            result.addErrback(failed)
        return result

    def _failed(
        self, session: Session, cmd: Command, e: BaseException, failure: Any = None
    ) -> None:
        if isinstance(e, UsageError):
            why = f"{e}; " if str(e) else ""
            self.voice.error(session, f"{why}usage: {cmd.usage_line}")
        elif isinstance(e, CommandError):
            self.voice.error(session, str(e))
        elif isinstance(e, StoreUnavailable):  # the store logs the outage once
            self.voice.error(session, f"/{cmd.name} could not be done: {UNAVAILABLE}")
        else:
            log.failure("/{name} failed", failure, name=cmd.name)
            self.voice.error(session, f"/{cmd.name} failed on the server; please try again later")

    # -- messages ---------------------------------------------------------------------------

    def say(self, session: Session, text: str, to_room: str | None = None) -> Message:
        """A public message from this session to the room called C{to_room} (None: the
        session's current room), once it is safely in history.

        The store saves messages in id order and fires in that order, so everyone receives
        them in id order, and nothing anyone has seen can be lost by a crash. With several
        nodes, those other nodes saved just before it are shown first (L{_in_id_order}).
        """
        if to_room is None:
            room = self.rooms.current(session).name
        else:
            found = self.all_rooms.get(to_room)
            if found is None or not self.all_rooms.holds(session.user, found):
                raise CommandError(f"you are not in {to_room}; /join {to_room} first")
            room = found.name
        return self._post(session.user.name, text, session, room=room)

    def _post(
        self,
        name: str,
        text: str,
        origin: Session | None,
        late: bool = False,
        room: str | None = None,
    ) -> Message:
        self.crowd.announce()
        id = self.sequence.next_public()
        room = room or self.all_rooms.default.name
        message = Message(id, self.clock.seconds(), name, text, None, origin, late, room)
        self.messages_sent += 1
        slot = self.outbox.reserve(lambda: self._publish(message))

        def failed(failure: Any) -> None:
            if not failure.check(StoreUnavailable):  # the store logs an outage once
                log.failure("saving a message from {name} failed", failure, name=name)
            if origin is not None:
                slot.action = lambda: deliver((origin,), Error(NOT_SAVED))

        def saved(stored: Message) -> defer.Deferred[None] | None:
            # A cluster's store may renumber it, past messages this node has not seen yet.
            return self._in_id_order(slot, stored, self._publish)

        d = self.store.add_message(message).addCallbacks(saved, failed)
        d.addBoth(lambda _: self.outbox.fill(slot))
        return message

    def show_in_order(self, message: Message) -> None:
        """Show another node's public message in order: after what this node is saving,
        and after any lower ids not shown yet."""
        if self.sequence.in_order(message.id):
            self.outbox.later(lambda: self._show(message))
            return
        slot = self.outbox.reserve()
        d = self._in_id_order(slot, message, self._show)
        assert d is not None
        d.addBoth(lambda _: self.outbox.fill(slot))

    def _in_id_order(
        self, slot: Slot, message: Message, show: Callable[[Message], object]
    ) -> defer.Deferred[None] | None:
        """Make C{slot} show C{message}, after the public messages below its id that this
        node has not shown (other nodes saved them; the bus has not brought them yet).

        Ids become visible in the store in id order, so once C{message} is saved, or heard
        of, everything below it can be read; when this node has shown every id below it
        (the usual case) nothing is read.
        """
        if self.sequence.in_order(message.id):
            slot.action = lambda: show(message)
            return None
        through = self.sequence.shown_through
        since = self.clock.seconds() - self.config.history_ttl
        d = self.store.messages(through, message.id - 1, since, READ_LIMIT)

        def fetched(missed: list[Message]) -> None:
            def action() -> None:
                for m in missed:
                    self._show(m)
                self.sequence.shown_up_to(message.id - 1)
                show(message)

            slot.action = action

        def failed(failure: Any) -> None:
            log_failed(log, failure, "reading the messages before {id} failed", id=message.id)
            slot.action = lambda: show(message)

        return d.addCallbacks(fetched, failed)

    def _publish(self, message: Message) -> None:
        """A message of ours is saved: show it here, then tell the other nodes."""
        self._show(message)
        self.link.published(message)

    def _show(self, message: Message) -> None:
        """Fan out a public message unless it was shown already."""
        if self.sequence.show(message.id):
            self.all_rooms.fanout(message.room, message)

    def recipient(self, name: str) -> str | None:
        """Who C{name} is, wherever they are: someone online here or on another node, or an
        account that is offline (it gets a whisper at its next login); None if nobody."""
        user = self.members.find(name)
        if user is not None:
            return user.name
        return self.members.is_elsewhere(name) or self.names.owner(name)

    def whisper(self, session: Session, to: str, text: str) -> Message:
        """A private message: every device of the recipient and of the sender sees it."""
        self.crowd.announce()
        name = self.recipient(to)
        if name is None:
            raise CommandError(f"nobody called {to} is online; /list shows who is")
        user = session.user
        if name_key(name) == user.key or (user.account and name == user.account):
            raise CommandError("you cannot send a private message to yourself")
        text = textrules.clean(text)
        if not text:
            raise UsageError("nothing to send")
        message = Message(self._whisper_id(), self.clock.seconds(), user.name, text, name, session)
        self.messages_sent += 1
        target = self.members.find(name)
        if target is None and self.members.is_elsewhere(name) is None:
            self._keep_for_later(session, message)
            return message
        # The sender's other devices may be elsewhere too: the link tells the other nodes.
        self._send_whisper(message, (*(target.sessions if target else ()), *user.sessions))
        return message

    def _whisper_id(self) -> int:
        """A whisper's id: its own alone; in a cluster, the one proposed to the store."""
        return self.sequence.given + 1 if self.store.shared_ids else self.sequence.next_private()

    def _send_whisper(self, message: Message, recipients: tuple[Session, ...]) -> None:
        """Deliver C{message} here, in the order, and tell the other nodes. In a cluster
        the store numbers it first: an id counted here may be another node's message's."""
        if not self.store.shared_ids:
            self.outbox.later(lambda: deliver(recipients, message))
            self.link.whispered(message)
            return
        slot = self.outbox.reserve()
        sender = message.origin

        def numbered(id: int) -> None:
            message.id = self.sequence.private(id)
            slot.action = lambda: deliver(recipients, message)
            self.link.whispered(message)

        def failed(failure: Any) -> None:
            log_failed(log, failure, "numbering a whisper to {to} failed", to=message.to)
            if isinstance(sender, Session):
                why = UNAVAILABLE if failure.check(StoreUnavailable) else "please try again"
                text = f"your message to {message.to} could not be sent: {why}"
                slot.action = lambda: self.voice.error(sender, text)

        d = self.store.take_id(message.id).addCallbacks(numbered, failed)
        d.addBoth(lambda _: self.outbox.fill(slot))

    def _keep_for_later(self, session: Session, message: Message) -> None:
        """A whisper to an account that is offline: delivered at its next login."""
        to = message.to
        assert to is not None

        def kept(_: object) -> None:
            if self.store.shared_ids:
                self.sequence.private(message.id)  # the store's id, not the one proposed
            self.voice.tell_user(session.user, message)
            self.voice.tell(session, f"{to} is offline and will get it when they log in")

        def failed(failure: Any) -> None:
            log_failed(log, failure, "keeping a whisper for {to} failed", to=to)
            self.voice.error(session, f"your message to {to} could not be kept; try again")

        self.store.keep_whisper(to, message).addCallbacks(kept, failed)

    # -- names ------------------------------------------------------------------------------

    def rename(self, session: Session, new: str) -> None:
        """C{/rename}: a guest picks another name (an account's name is its own)."""
        user = session.user
        if user.account is not None and new.casefold() != user.account.casefold():
            raise CommandError(
                "your name is your account's; /logout to chat as a guest under another name"
            )
        problem = self.names.problem(new, user)
        if problem is not None:
            raise CommandError(problem)
        self._check(session, RENAME)  # counted only when the name is free
        self.renamed(user, new)

    def renamed(self, user: User, new: str, why: str | None = None) -> None:
        """Give C{user} the name C{new} and tell everyone; C{why} tells the user instead,
        when the chat chose the name for them (another node's user keeps the name)."""
        self.crowd.announce()  # joins of this turn under the name they joined with
        old = user.name
        self.members.rename(user, new)
        for s in user.sessions:
            s.deliver(Identity(new, user.account))
        if why is None:
            # The renamer hears it once, as "you are ..." (its Identity).
            self.voice.notice_all(
                f"{old} is now known as {new}",
                skip=frozenset({user.key}),
                about="renamed",
                subject=(old, new),
            )
        else:
            self.voice.tell_user(user, Notice(why))
            self.voice.notice_all(
                f"the other {old} is now known as {new}",
                skip=frozenset({name_key(new)}),
                about="renamed",
                subject=(old, new),
            )
        self.crowd.changed()

    def online(self) -> list[str]:
        return self.members.online()

    def find(self, name: str) -> User | None:
        return self.members.find(name)

    # -- moderation -------------------------------------------------------------------------

    def report(self, session: Session, name: str) -> str:
        """C{/report NAME}; returns what to tell the reporter (a mute is told to everyone)."""
        self._check(session, REPORT)
        target = self.members.find(name)
        elsewhere = self.members.is_elsewhere(name) if target is None else None
        if elsewhere is not None:
            if not self.config.reports_to_mute:
                raise CommandError("reports are switched off on this server")
            name = elsewhere
            self.link.report(name, reporter_key(session))
            return f"you reported {name}"
        if target is None:
            raise CommandError(f"nobody called {name} is online; /list shows who is")
        muted_for = self.moderation.report(session, target)
        log.info("{reporter} reported {target}", reporter=session.user.name, target=target.name)
        if muted_for is None:
            return f"you reported {target.name}"
        self.announce_mute(target, muted_for)
        return ""

    def announce_mute(self, user: User, seconds: float) -> None:
        log.info("{target} muted for {seconds}s", target=user.name, seconds=seconds)
        self.voice.notice_all(f"{user.name} was muted for {duration(seconds)} after complaints")

    # -- scheduled messages -----------------------------------------------------------------

    def schedule(self, session: Session, seconds: int, text: str, to: str | None) -> Pending:
        return self.scheduler.add(
            owner(session.user), seconds, text, to, lambda why: self.voice.error(session, why)
        )

    def _send_scheduled(self, entry: Pending) -> None:
        """A scheduled message is due: send it, if its author may still speak.

        An account's goes out whether or not one of its devices is online (also when it
        fell due while the server was down: then it is shown with its time); a guest's
        only while that guest is here.
        """
        account = account_of(entry.owner)
        if account is None:
            user = entry.owner if isinstance(entry.owner, User) else None
        else:
            found = self.members.find(account)
            user = found if found is not None and found.account == account else None
        if user is None and account is None:
            log.info("scheduled message #{id} dropped: its author left", id=entry.id)
            return
        late = entry.late
        if user is None or not user.sessions:
            assert account is not None
            self._send_for_offline(account, entry, late)
            return
        session = user.sessions[0]
        problem = self.gate.check(session, SCHEDULED)
        if problem is not None and self.moderation.mute_left(user):
            problem = "you are muted"
        if problem is None:
            try:
                if entry.to is None:
                    self._post(user.name, entry.text, session, late)
                else:
                    self.whisper(session, entry.to, entry.text)
            except CommandError as e:
                problem = str(e)
        for s in user.sessions:
            if problem is None:
                self.voice.tell(s, f"your scheduled message #{entry.id} was sent")
            else:
                self.voice.error(s, f"your scheduled message #{entry.id} was not sent: {problem}")

    def _send_for_offline(self, account: str, entry: Pending, late: bool) -> None:
        """An account's scheduled message while none of its devices is here."""
        if self.moderation.mute_left(User(account, 0.0, account)):
            log.info("scheduled message #{id} of {a} not sent: muted", id=entry.id, a=account)
            return
        if entry.to is None:
            self._post(account, entry.text, None, late)
            return
        to = self.recipient(entry.to)
        if to is None:
            log.info("scheduled message #{id}: nobody called {to}", id=entry.id, to=entry.to)
            return
        message = Message(
            self._whisper_id(), self.clock.seconds(), account, entry.text, to, None, late
        )
        self.messages_sent += 1
        target = self.members.find(to)
        self._send_whisper(message, tuple(target.sessions) if target is not None else ())

    # -- accounts ---------------------------------------------------------------------------

    def register(self, session: Session, name: str, password: str) -> defer.Deferred[str]:
        self._check(session, REGISTER)
        return self.logins.register(session, name, password)

    def register_account(
        self, session: Session, nickname: str, password: str | None = None
    ) -> defer.Deferred[tuple[str, str]]:
        """A new account named C{nickname} or a free variant (minechat); (name, token)."""
        self._check(session, REGISTER)
        return self.logins.register_account(session, nickname, password)

    def login(self, session: Session, name: str, password: str) -> defer.Deferred[None]:
        self._check(session, LOGIN)
        return self.logins.login(session, name, password)

    def login_with_token(self, session: Session, token: str) -> defer.Deferred[str | None]:
        """Log in with a token; fires with the account name, or None when it is unknown."""
        self._check(session, LOGIN)
        return self.logins.login_with_token(session, token)

    def logout(self, session: Session) -> None:
        self._check(session, LOGOUT)
        self.logins.logout(session)

    def account_request(
        self, session: Session, kind: str, name: str, password: str
    ) -> defer.Deferred[str | None]:
        """Register or log in with the name and password as separate fields (the page's
        form): no command line to split, so "Mary Jane" is a name the rules refuse, not
        "Mary" with the password "Jane ...". Fires with what to tell the user (None when
        the request was dropped: the flood rules told them why); fails with L{CommandError}."""
        if session.closing or not self.gate.line(session):
            return defer.succeed(None)
        log.info("{session} asks to {kind}", session=session, kind=kind)
        if self.audit is not None:
            self.audit.record(self.clock.seconds(), session, kind, "...")
        name, password = textrules.clean(name), textrules.clean(password)
        too_long = self.gate.size(name + password)
        if too_long is not None:
            return defer.fail(CommandError(too_long))
        if kind == "register":
            d = defer.maybeDeferred(self.register, session, name, password)
            return d.addCallback(lambda _: f"account {name} created; you are logged in")
        d = defer.maybeDeferred(self.login, session, name, password)
        return d.addCallback(lambda _: f"logged in as {name}")

    def _check(self, session: Session, action: Action) -> None:
        """Ask the gate; a refusal is raised for the caller to tell."""
        refusal = self.gate.check(session, action)
        if refusal is not None:
            raise CommandError(refusal)

    # -- history ----------------------------------------------------------------------------

    def history(self, limit: int, room_name: str | None = None) -> defer.Deferred[list[Message]]:
        """The last C{limit} public messages of the room called C{room_name} (None: the
        default room) still inside the history TTL, oldest first.

        Includes the caller's own messages still being saved (the query runs after them),
        and whatever other nodes saved meanwhile, so every node answers alike.
        """
        since = self.clock.seconds() - self.config.history_ttl
        return self.store.messages(0, ANY_ID, since, limit, (self._room_name(room_name),))

    def history_after(
        self, after_id: int, limit: int, room_name: str | None = None
    ) -> defer.Deferred[list[Message]]:
        """The newest C{limit} shown public messages of a room (None: the default one)
        after id C{after_id}, oldest first.

        To resume a client: messages still being saved reach it live, not twice.
        """
        since = self.clock.seconds() - self.config.history_ttl
        rooms = (self._room_name(room_name),)
        return self.store.messages(after_id, self.sequence.newest_shown, since, limit, rooms)

    def _room_name(self, name: str | None) -> str:
        """A room's own spelling (what its messages are saved under)."""
        found = self.all_rooms.get(name) if name else self.all_rooms.default
        return found.name if found is not None else self.all_rooms.normal(name or "")

    # -- rooms ------------------------------------------------------------------------------

    def join(self, session: Session, name: str) -> None:
        """C{/join #room}; raises L{CommandError} with the reason it may not."""
        self.rooms.join(session, name)

    def part(self, session: Session, name: str | None = None) -> None:
        self.rooms.part(session, name)

    def switch(self, session: Session, name: str) -> None:
        """Make C{name}, a room the session is in, its current one (quietly: the page
        names the room of each line it sends)."""
        found = self.all_rooms.get(name)
        if found is None or not self.all_rooms.holds(session.user, found):
            raise CommandError(f"you are not in {name}; /join {name} first")
        session.move(found.name)

    def conversation(self, name: str) -> Conversation | None:
        return self.all_rooms.get(name)

    def conversations(self) -> list[Conversation]:
        """Every room this node knows (for /rooms and IRC LIST)."""
        return list(self.all_rooms)

    def set_topic(self, session: Session, name: str | None, text: str) -> None:
        self.rooms.set_topic(session, name, text)

    def kick(self, session: Session, room_name: str | None, who: str, minutes: int) -> None:
        self.rooms.kick(session, room_name, who, minutes)

    def invite(self, session: Session, room_name: str | None, who: str) -> str:
        return self.rooms.invite(session, room_name, who)

    def _purge(self) -> defer.Deferred[Any]:
        self.moderation.prune(self.clock.seconds())
        d = self.store.purge_messages(self.clock.seconds() - self.config.history_ttl)
        return d.addErrback(lambda f: log_failed(log, f, "purging old history failed"))

    # -- what /status shows -----------------------------------------------------------------

    def status(self, session: Session) -> Status:
        now = self.clock.seconds()
        user = session.user
        return Status(
            online=self.members.online_count(),
            here=len(self.members.users) if self.members.elsewhere else None,
            connections=len(self.members.sessions),
            messages=self.messages_sent,
            uptime=now - self.started,
            name=user.name,
            account=user.account,
            since=now - user.since,
            devices=[
                (s.client.door, s.client.peer, now - s.since, s is session) for s in user.sessions
            ],
            standing=self.gate.standing(user),
            scheduled=self.scheduler.pending(owner(user)),
        )


class RoomContext:
    """The L{chatd.commands.Context} the Room gives a running command: the caller, and
    the documented ways to reach the chat. Built-in commands get nothing more."""

    __slots__ = ("_room", "session", "invoked_as")

    def __init__(self, room: Room, session: Session, invoked_as: str) -> None:
        self._room = room
        self.session = session
        self.invoked_as = invoked_as

    @property
    def name(self) -> str:
        return self.session.user.name

    @property
    def account(self) -> str | None:
        return self.session.user.account

    @property
    def services(self) -> Services:
        return self._room.services

    def reply(self, text: str) -> None:
        self._room.voice.tell(self.session, text)

    def error(self, text: str) -> None:
        self._room.voice.error(self.session, text)

    def show(self, event: Event) -> None:
        self._room.voice.event(self.session, event)

    def announce(self, text: str, others_only: bool = False) -> None:
        self._room.voice.notice_all(text, exclude=self.session if others_only else None)

    def find(self, name: str) -> str | None:
        return self._room.recipient(name)

    def say(self, text: str) -> None:
        self._room.say(self.session, text)

    def whisper(self, to: str, text: str) -> None:
        self._room.whisper(self.session, to, text)

    def rename(self, new: str) -> None:
        self._room.rename(self.session, new)

    def report(self, name: str) -> None:
        told = self._room.report(self.session, name)
        if told:
            self.reply(told)

    def online(self) -> defer.Deferred[list[str]]:
        def answered(answer: tuple[list[str], bool]) -> list[str]:
            names, stale = answer
            if stale:
                self.reply(MAYBE_STALE)
            return names

        return self._room.link.who().addCallback(answered)

    def elsewhere(self) -> defer.Deferred[Elsewhere]:
        account = self.session.user.account
        if account is None:
            return defer.succeed(Elsewhere([], []))  # a guest is on one server only
        return self._room.link.sessions_of(account)

    def history(self, limit: int) -> defer.Deferred[list[Message]]:
        return self._room.history(limit, self.room)

    @property
    def room(self) -> str:
        return self._room.rooms.current(self.session).name

    def join(self, name: str) -> None:
        self._room.join(self.session, name)

    def part(self, name: str | None) -> None:
        self._room.part(self.session, name)

    def rooms(self) -> list[RoomInfo]:
        rooms = self._room.all_rooms
        user = self.session.user
        here = self.room
        return [
            RoomInfo(
                c.name,
                rooms.count(c),
                c.topic,
                c.owner,
                c.invite_only,
                rooms.holds(user, c),
                c.name == here,
            )
            for c in rooms
        ]

    def _named(self, name: str | None) -> Conversation:
        rooms = self._room.all_rooms
        found = rooms.get(rooms.normal(name)) if name else self._room.rooms.current(self.session)
        if found is None:
            raise CommandError(f"there is no room {name}; /rooms lists them")
        return found

    def topic(self, name: str | None) -> str:
        return self._named(name).topic

    def set_topic(self, text: str) -> None:
        self._room.set_topic(self.session, None, text)

    def who(self, name: str | None) -> list[str]:
        return self._room.all_rooms.names(self._named(name))

    def kick(self, who: str, minutes: int) -> None:
        self._room.kick(self.session, None, who, minutes)

    def invite(self, who: str) -> str:
        return self._room.invite(self.session, None, who)

    def status(self) -> Status:
        return self._room.status(self.session)

    def schedule(self, seconds: int, text: str, to: str | None) -> Pending:
        return self._room.schedule(self.session, seconds, text, to)

    def cancel(self, number: int | None) -> Pending:
        return self._room.scheduler.cancel(owner(self.session.user), number)

    def scheduled(self) -> list[Pending]:
        return self._room.scheduler.pending(owner(self.session.user))

    def register(self, name: str, password: str) -> defer.Deferred[str]:
        return self._room.register(self.session, name, password)

    def login(self, name: str, password: str) -> defer.Deferred[None]:
        return self._room.login(self.session, name, password)

    def login_with_token(self, token: str) -> defer.Deferred[str | None]:
        return self._room.login_with_token(self.session, token)

    def logout(self) -> None:
        self._room.logout(self.session)

    def close(self, reason: str) -> None:
        self._room.voice.close(self.session, reason)
