"""Who is here: this node's users and sessions, listeners, and (as last heard) the users
of the other nodes. Everything that moves a session between users goes through here, so
the index by name can never disagree with the sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

from twisted.logger import Logger

from chatd.events import Event
from chatd.people import Client, Session, User, name_key

log = Logger(namespace="chatd.members")

DeliverAll = Callable[[tuple[Session, ...], Event], None]
T = TypeVar("T")


def deliver(sessions: Iterable[Session], event: Event) -> None:
    """Deliver C{event} to each session; a failing door does not stop the others."""
    for session in sessions:
        try:
            session.client.deliver(event)
        except Exception:
            log.failure("delivering to {session} failed", session=session)


class Kept:
    """A fan-out's who-gets-what for one room, kept between messages while it cannot have
    changed: the same snapshot of sessions (a L{SessionSet} makes a new one on every join
    and leave), the same room, and the same C{stamp} (L{Session.moves}, and whatever else
    the door counts). With a thousand in a steady room, the next message reuses the answer
    instead of a pass over every session. The answer is shared: not to be changed."""

    __slots__ = ("_key", "_answer")

    def __init__(self) -> None:
        self._key: tuple[tuple[Session, ...], str | None, object] | None = None
        self._answer: Any = None

    def get(
        self,
        sessions: tuple[Session, ...],
        room: str | None,
        stamp: object,
        build: Callable[[tuple[Session, ...], str | None], T],
    ) -> T:
        key = self._key
        if key is not None and key[0] is sessions and key[1] == room and key[2] == stamp:
            return self._answer  # type: ignore[no-any-return]
        answer = build(sessions, room)
        self._key, self._answer = (sessions, room, stamp), answer
        return answer


class SessionSet:
    """Sessions in the order they came: a join or a leave is O(1) (a crowd arriving or a
    mass disconnect is not O(n²)), and fan-out reads snapshots, rebuilt at most once per
    change, so a delivery that disconnects someone cannot break the loop delivering.

    For fan-out the sessions are grouped by door (L{Client.deliver_all}): a door then
    takes one event for all of its sessions, and looks up its bytes once rather than once
    per recipient in a call per recipient.
    """

    __slots__ = ("_sessions", "_tuple", "_groups")

    def __init__(self) -> None:
        self._sessions: dict[Session, None] = {}
        self._tuple: tuple[Session, ...] | None = ()
        self._groups: tuple[tuple[DeliverAll, tuple[Session, ...]], ...] | None = ()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session: object) -> bool:
        return session in self._sessions

    def add(self, session: Session) -> None:
        self._sessions[session] = None
        self._tuple = self._groups = None

    def discard(self, session: Session) -> None:
        if session in self._sessions:
            del self._sessions[session]
            self._tuple = self._groups = None

    @property
    def all(self) -> tuple[Session, ...]:
        """Every session, in the order they came (a snapshot: never mutated)."""
        snapshot = self._tuple
        if snapshot is None:
            snapshot = self._tuple = tuple(self._sessions)
        return snapshot

    def groups(self) -> tuple[tuple[DeliverAll, tuple[Session, ...]], ...]:
        """The sessions by door: each door's L{Client.deliver_all} and its sessions."""
        groups = self._groups
        if groups is None:
            by_door: dict[DeliverAll, list[Session]] = {}
            for session in self._sessions:
                door = getattr(session.client, "deliver_all", deliver)
                by_door.setdefault(door, []).append(session)
            groups = self._groups = tuple((door, tuple(s)) for door, s in by_door.items())
        return groups

    def fanout(self, event: Event, outside: Collection[User] = ()) -> None:
        """Deliver C{event} to every session but those of the users C{outside}."""
        for door, sessions in self.groups():
            if outside:
                sessions = tuple(s for s in sessions if s.user not in outside)
            try:
                door(sessions, event)
            except Exception:  # a failing door does not stop the others
                log.failure("delivering to {door} failed", door=door)


class Members:
    """The people of one node.

    @ivar present: this node's sessions (L{sessions} is a snapshot of them).
    @ivar listeners: read-only clients (the minechat read port) that hear public messages.
    @ivar elsewhere: name key -> name, the users of the other nodes as last heard.
    """

    def __init__(self) -> None:
        self.users: dict[str, User] = {}  # name key (L{name_key}) -> user
        self.present = SessionSet()
        self.listeners: tuple[Client, ...] = ()
        self.elsewhere: dict[str, str] = {}

    @property
    def sessions(self) -> tuple[Session, ...]:
        """Every session here, in the order they came; a snapshot, never mutated."""
        return self.present.all

    def find(self, name: str) -> User | None:
        return self.users.get(name_key(name))

    def online_count(self) -> int:
        """How many are online; O(1) on a node alone (every greeting says it)."""
        if not self.elsewhere:
            return len(self.users)
        return len(self.users.keys() | self.elsewhere.keys())

    def online(self) -> list[str]:
        """Everyone, on this node and (as last heard) on the others, sorted."""
        names = {**self.elsewhere, **{key: u.name for key, u in self.users.items()}}
        return sorted(names.values(), key=str.casefold)

    def add(self, session: Session) -> None:
        """A new session, with a user of its own."""
        self.attach(session, session.user)
        self.present.add(session)

    def remove(self, session: Session) -> bool:
        """Forget C{session}; True when its user has no session left."""
        self.present.discard(session)
        return self.detach(session)

    def attach(self, session: Session, user: User) -> None:
        """Make C{session} one of C{user}'s (a login, or a new guest after a logout)."""
        user.sessions.append(session)
        session.user = user
        self.users[user.key] = user
        for conversation in user.rooms.values():
            conversation.add_session(session)

    def detach(self, session: Session) -> bool:
        """Take C{session} from its user; True when that user has no session left."""
        user = session.user
        user.sessions.remove(session)
        for conversation in user.rooms.values():
            conversation.remove_session(session)
        if user.sessions:
            return False
        if self.users.get(user.key) is user:
            del self.users[user.key]
        return True

    def rename(self, user: User, name: str) -> None:
        if self.users.get(user.key) is user:
            del self.users[user.key]
        user.name = name
        self.users[user.key] = user

    def is_elsewhere(self, name: str) -> str | None:
        """C{name} as a user of another node spells it, or None."""
        return self.elsewhere.get(name_key(name))

    def listen(self, client: Client) -> None:
        self.listeners = (*self.listeners, client)

    def unlisten(self, client: Client) -> None:
        self.listeners = tuple(c for c in self.listeners if c is not client)

    def fanout(self, event: Event, outside: Collection[User] = ()) -> None:
        """Deliver one event to every session (but those of the users C{outside}) and
        every listener."""
        self.present.fanout(event, outside)
        for client in self.listeners:
            try:
                client.deliver(event)
            except Exception:
                log.failure("delivering to listener {peer} failed", peer=client.peer)
