"""The cluster link: what this node tells the other nodes of the chat, and what it does
with what they tell it. Built only when there is a bus; it subscribes itself to it.

Public messages carry the store's ids, one sequence for the cluster; the bus may lose
events, so after a gap the node reads the public messages it missed from the store. Names
are settled across nodes (two nodes may hand out one name at the same moment), mutes and
accounts' spent messages are shared, and reports of a user elsewhere go to that user's
node, which knows their address.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.bus import PRESENCE, Bus, Undelivered
from chatd.bus.wire import from_wire, to_wire
from chatd.commands import Elsewhere
from chatd.config import Config
from chatd.crowd import Crowd
from chatd.errors import CommandError
from chatd.events import Message, Notice
from chatd.gate import Gate
from chatd.members import Members, deliver
from chatd.moderation import Moderation
from chatd.names import Names
from chatd.outbox import Outbox
from chatd.people import User, name_key
from chatd.rooms import Rooms
from chatd.sequence import READ_LIMIT, Sequence
from chatd.store import ANY_ID, Store, log_failed
from chatd.voice import Voice

log = Logger(namespace="chatd.cluster")

EVENT = "event"  # the bus kind for events shown on every node
MODERATION = "moderation"  # the bus kind for reports, mutes and accounts' spent messages
CLAIM = "claim"  # the bus kind for "my user has this name", when two nodes gave out one
ACCOUNT = "account"  # the bus kind for a new account's name: no guest elsewhere may take it
ROOM = "room"  # the bus kind for a room's state, or for its members on one node
SESSIONS = "sessions"  # the bus kind for "where are this account's sessions?" and answers
# Seconds /list and /status wait for the other nodes; then they answer with what is known
# (a frozen Redis would otherwise hold them for its reply timeout, 10 s).
ASK_TIMEOUT = 1.0


class Node(Protocol):
    """What the link needs of this node's chat (the Room)."""

    config: Config
    clock: IReactorTime
    store: Store
    members: Members
    names: Names
    outbox: Outbox
    crowd: Crowd
    gate: Gate
    moderation: Moderation
    sequence: Sequence
    voice: Voice
    rooms: Rooms

    def show_in_order(self, message: Message) -> None: ...

    def renamed(self, user: User, new: str, why: str | None = None) -> None: ...

    def announce_mute(self, user: User, seconds: float) -> None: ...


class ClusterLink:
    """Carries a node's news over the bus, and the other nodes' news into the node."""

    def __init__(self, node: Node, bus: Bus) -> None:
        self.node = node
        self.bus = bus
        self.id = node.config.node or uuid.uuid4().hex  # settles name clashes (L{_claimed})
        # The newest public id heard from the other nodes. Ours go out meanwhile, so the
        # bus's own last_id can pass ids it lost; recovery starts from this one too.
        self.heard_id = node.store.last_id
        bus.last_id = max(bus.last_id, node.store.last_id)
        bus.subscribe(self._from_bus)
        bus.on_gap(self._recover)
        # Dead nodes drop out of the bus's presence on their own: look again now and then.
        self._presence = task.LoopingCall(self._refresh_presence)
        self._presence.clock = node.clock
        self._asking: defer.Deferred[list[str]] | None = None  # a /list's question, unanswered
        self._asks: dict[str, _Ask] = {}  # /status questions waiting for answers, by token

    def start(self) -> None:
        self._presence.start(self.node.config.presence_ttl, now=False)

    def stop(self) -> None:
        if self._presence.running:
            self._presence.stop()

    # -- what this node tells the others ----------------------------------------------------

    def published(self, message: Message) -> None:
        self._tell(EVENT, to_wire(message))

    def whispered(self, message: Message) -> None:
        d = self.bus.publish(EVENT, to_wire(message))
        sender = message.origin

        def lost(failure: Any) -> None:
            failure.trap(Undelivered)
            log.warn("a whisper to {to} could not be sent to the other nodes", to=message.to)
            if sender is not None:
                self.node.voice.error(
                    sender,
                    f"your message to {message.to} may not have reached them: the link between "
                    "the servers is down; try again in a moment",
                )

        d.addErrback(lost)
        d.addErrback(lambda f: log.failure("publishing a whisper failed", f))

    def noticed(self, notice: Notice) -> None:
        self._tell(EVENT, to_wire(notice))

    def present(self, names: list[str]) -> None:
        d = self.bus.set_present(names)
        d.addErrback(lambda f: log.failure("announcing who is here failed", f))

    def moderated(self, change: dict[str, Any]) -> None:
        self._tell(MODERATION, change)

    def registered(self, name: str) -> None:
        self._tell(ACCOUNT, {"name": name})

    def report(self, name: str, by: Hashable) -> None:
        self._tell(MODERATION, {"report": name, "by": by})

    def who(self) -> defer.Deferred[tuple[list[str], bool]]:
        """Ask the bus, for at most L{ASK_TIMEOUT}; at once from the last known list when
        the bus is away, or a question asked before is still unanswered (a frozen Redis)."""
        members = self.node.members
        if not self.bus.answering() or self._asking is not None:
            return defer.succeed((members.online(), True))
        asking = self._asking = self.bus.online()

        def settled(result: Any) -> Any:  # whatever came of it, a later /list may ask
            if self._asking is asking:
                self._asking = None
            return result

        def answered(names: list[str]) -> tuple[list[str], bool]:
            self._heard(names)
            return members.online(), False

        def unanswered(failure: Any) -> tuple[list[str], bool]:
            log.info("presence unknown: {e}", e=failure.getErrorMessage())
            return members.online(), True

        asking.addBoth(settled)
        return _within(asking, ASK_TIMEOUT, self.node.clock).addCallbacks(answered, unanswered)

    def sessions_of(self, account: str) -> defer.Deferred[Elsewhere]:
        """Ask the nodes where C{account} is online (by their presence) for its sessions;
        those that do not answer within L{ASK_TIMEOUT} are named instead."""
        clock = self.node.clock
        deadline = clock.seconds() + ASK_TIMEOUT

        async def ask() -> Elsewhere:
            if not self.bus.answering():
                return Elsewhere([], ["other servers"])  # the link to them is down
            try:
                where = await _within(self.bus.by_node(), ASK_TIMEOUT, clock)
            except Exception as e:
                log.info("presence unknown: {e}", e=e)
                return Elsewhere([], ["other servers"])
            key = name_key(account)
            nodes = sorted(
                n
                for n, names in where.items()
                if n != self.bus.node and any(name_key(str(x)) == key for x in names)
            )
            if not nodes:
                return Elsewhere([], [])
            token = uuid.uuid4().hex
            waiting = self._asks[token] = _Ask(set(nodes))
            self._tell(SESSIONS, {"ask": token, "account": account, "nodes": nodes})
            wait = max(0.0, deadline - clock.seconds())
            try:
                await waiting.done.addTimeout(wait, clock)
            except defer.TimeoutError:
                pass
            finally:
                del self._asks[token]
            return Elsewhere(waiting.devices, [f"server {n}" for n in sorted(waiting.nodes)])

        return defer.ensureDeferred(ask())

    def members_of(self, room: str, names: list[str]) -> None:
        self._tell(ROOM, {"room": room, "node": self.id, "names": names})

    def room_changed(self, state: str) -> None:
        self._tell(ROOM, {"state": state})

    def invited(self, name: str, notice: Notice) -> None:
        # "text" as well: a node of an older version reads only that.
        self._tell(ROOM, {"invited": name, "notice": to_wire(notice), "text": notice.text})

    def _tell(self, kind: str, payload: dict[str, Any]) -> None:
        d = self.bus.publish(kind, payload)
        d.addErrback(lambda f: f.trap(Undelivered))  # the bus logged the outage
        d.addErrback(lambda f: log.failure("publishing a {kind} failed", f, kind=kind))

    # -- what the others tell this node -----------------------------------------------------

    def _from_bus(self, kind: str, payload: dict[str, Any]) -> None:
        """Another node published something (in the order it did)."""
        if kind == PRESENCE:
            self._clashes(payload.get("names", []))
            self._refresh_presence()
            return
        handler = {
            MODERATION: self._moderate,
            CLAIM: self._claimed,
            ACCOUNT: self._registered,
            ROOM: self._room,
            SESSIONS: self._sessions,
        }
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
        node = self.node
        if isinstance(event, Message) and event.to is None:
            self.heard_id = max(self.heard_id, event.id)
            node.show_in_order(event)
        elif isinstance(event, Message):
            if node.store.shared_ids:
                node.sequence.private(event.id)  # the store's: no public message has it
            event.by = node.members.find(event.sender)  # its devices here see their own echo
            users = {node.members.find(event.to), event.by} - {None}
            recipients = tuple(s for u in users if isinstance(u, User) for s in u.sessions)
            node.outbox.later(lambda: deliver(recipients, event))
        elif isinstance(event, Notice):
            rooms = node.rooms.all
            if event.room is None:
                sessions = node.members.sessions
            else:
                found = rooms.get(event.room)
                sessions = () if found is None else rooms.sessions(found)
            node.outbox.later(lambda: deliver(sessions, event))
            if event.about == "renamed" and len(event.subject) == 2:
                node.rooms.heard_renamed(*event.subject)  # after: doors hear the rename first

    def _room(self, payload: dict[str, Any]) -> None:
        """A room's state, or its members on another node."""
        if "state" in payload:
            self.node.rooms.heard_state(str(payload["state"]))
            return
        if "invited" in payload:
            user = self.node.members.find(str(payload["invited"]))
            if user is not None:
                told = payload.get("notice")  # none from a node of an older version
                notice = from_wire(told) if told else Notice(str(payload["text"]))
                self.node.rooms.voice.tell_user(user, notice)
            return
        names = [str(n) for n in payload["names"]]
        self.node.rooms.heard_members(str(payload["node"]), str(payload["room"]), names)

    def _sessions(self, payload: dict[str, Any]) -> None:
        """Another node's C{/status} asks where an account's sessions are, or answers."""
        if "ask" in payload:
            if self.bus.node not in payload["nodes"]:
                return
            account = str(payload["account"])
            user = self.node.members.find(account)
            now = self.node.clock.seconds()
            devices = []
            if user is not None and user.account == account:
                devices = [[s.client.door, s.client.peer, now - s.since] for s in user.sessions]
            answer = {"answer": payload["ask"], "node": self.bus.node, "devices": devices}
            self._tell(SESSIONS, answer)
            return
        waiting = self._asks.get(str(payload["answer"]))
        node = str(payload["node"])
        if waiting is None or node not in waiting.nodes:
            return  # answered too late, or twice
        waiting.nodes.discard(node)
        for door, peer, age in payload["devices"]:
            waiting.devices.append((node, str(door), str(peer), float(age)))
        if not waiting.nodes:
            waiting.done.callback(None)

    def _registered(self, payload: dict[str, Any]) -> None:
        """Another node made an account: its name is reserved here too, online or not."""
        self._reserve(str(payload["name"]))

    def _reserve(self, name: str) -> None:
        """An account's name: nobody else takes it, and a guest here who has it yields."""
        self.node.names.reserve(name)
        user = self.node.members.find(name)
        if user is not None and user.account is None:
            self._claimed({"name": name, "node": "", "account": True})

    def _clashes(self, names: list[str]) -> None:
        """Another node's users (its presence): claim the names our guests share with them.

        Two nodes can give out one name at the same moment (each checks what it has heard
        so far). Guests claim; an account on two nodes is usually one person's two devices,
        and when a guest elsewhere has its name, that guest's node claims.
        """
        for name in names:
            user = self.node.members.find(str(name))
            if user is not None and user.account is None:
                self._claim(user)

    def _claim(self, user: User) -> None:
        self._tell(CLAIM, {"name": user.name, "node": self.id, "account": user.account is not None})

    def _claimed(self, payload: dict[str, Any]) -> None:
        """Another node's user has the name of one of ours: exactly one of them yields.

        Both nodes rank the two users alike: a guest yields to an account (an account's
        name is its own), and of two guests, the one on the node whose id sorts later. An
        account on two nodes is one account (the store keeps names unique): nobody yields.
        The winner claims back, since the loser may not have heard of it.
        """
        name, node, account = str(payload["name"]), str(payload["node"]), bool(payload["account"])
        user = self.node.members.find(name)
        if user is None or (account and user.account is not None):
            return  # renamed or gone meanwhile, or one account's devices
        mine, theirs = (user.account is None, self.id), (not account, node)
        if mine < theirs:
            self._claim(user)
            return
        if mine == theirs:
            return  # two nodes with one id: a configuration error, nothing to settle
        self.node.members.elsewhere[name_key(name)] = name
        new = self.node.names.guest()
        log.info("{old} on node {node} too: renamed {new}", old=user.name, node=node, new=new)
        why = f"someone on another server already had the name {name}; you are now {new}"
        self.node.renamed(user, new, why=f"{why} (/nick picks another)")

    def _moderate(self, payload: dict[str, Any]) -> None:
        if "report" not in payload:
            self.node.gate.heard(payload)
            return
        target = self.node.members.find(str(payload["report"]))
        if target is None:
            return  # not ours, or gone
        try:
            seconds = self.node.moderation.report_by(tuple(payload["by"]), target)
        except CommandError as e:
            log.info("a report from another node did not count: {e}", e=e)
            return
        if seconds is not None:
            self.node.announce_mute(target, seconds)

    def _refresh_presence(self) -> defer.Deferred[None]:
        """Ask the bus who is where; member lists change only when the answer does."""
        d = self.bus.online().addCallback(self._heard)
        return d.addErrback(lambda f: log.warn("presence unknown: {e}", e=f.getErrorMessage()))

    def _heard(self, names: list[str]) -> None:
        members = self.node.members
        keys = {name_key(n): n for n in names}
        elsewhere = {k: n for k, n in keys.items() if k not in members.users}
        if elsewhere != members.elsewhere:
            members.elsewhere = elsewhere
            self.node.crowd.refresh()

    def _recover(self, last_id: int) -> None:
        """The bus may have lost messages after C{last_id}: show them from the store.

        Starts at the last one heard from the bus if that is older: ours, sent meanwhile,
        may be newer than some that were lost. Those shown already are skipped. Our users
        are announced again: a node whose guest got one of their names meanwhile claims it.
        """
        node = self.node
        node.crowd.retell()
        node.rooms.restore()  # topics, kicks and invitations changed meanwhile
        node.store.read_account_names().addCallbacks(
            self._accounts_known, lambda f: log_failed(log, f, "reading account names failed")
        )
        after_id = min(last_id, self.heard_id)
        since = node.clock.seconds() - node.config.history_ttl
        d = node.store.messages(after_id, ANY_ID, since, READ_LIMIT)

        def show(missed: list[Message]) -> None:
            log.info("recovered {n} messages after id {id}", n=len(missed), id=after_id)
            for message in missed:
                self.heard_id = max(self.heard_id, message.id)
                node.show_in_order(message)

        d.addCallbacks(
            show, lambda f: log_failed(log, f, "recovering after id {id} failed", id=after_id)
        )

    def _accounts_known(self, names: list[str]) -> None:
        """Accounts made on other nodes while the bus was cut off are reserved here too."""
        for name in names:
            if self.node.names.owner(name) is None:
                self._reserve(name)


class _Ask:
    """A C{/status} question on the bus: the nodes still to answer, and what they said."""

    __slots__ = ("nodes", "devices", "done")

    def __init__(self, nodes: set[str]) -> None:
        self.nodes = nodes
        self.devices: list[tuple[str, str, str, float]] = []
        self.done: defer.Deferred[None] = defer.Deferred()


def _within(d: defer.Deferred[Any], seconds: float, clock: IReactorTime) -> defer.Deferred[Any]:
    """What C{d} fires with, or L{defer.TimeoutError} after C{seconds}. C{d} itself is not
    cancelled: a Redis command's Deferred answered after a cancel would break the client's
    queue of replies."""
    out: defer.Deferred[Any] = defer.Deferred()
    timer = clock.callLater(
        seconds, lambda: out.called or out.errback(defer.TimeoutError(f"{seconds:g} s"))
    )

    def fired(result: Any) -> None:
        if timer.active():
            timer.cancel()
        if out.called:
            return
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)

    d.addBoth(fired)
    return out
