"""Who is here: this node's users and sessions, listeners, and (as last heard) the users
of the other nodes. Everything that moves a session between users goes through here, so
the index by name can never disagree with the sessions.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from chatd.events import Event
from chatd.people import Client, Session, User, name_key

log = Logger(namespace="chatd.members")


def deliver(sessions: Iterable[Session], event: Event) -> None:
    """Deliver C{event} to each session; a failing door does not stop the others."""
    for session in sessions:
        try:
            session.client.deliver(event)
        except Exception:
            log.failure("delivering to {session} failed", session=session)


class Members:
    """The people of one node.

    @ivar sessions: replaced, never mutated, so a delivery that disconnects someone cannot
        break the loop that is delivering.
    @ivar listeners: read-only clients (the minechat read port) that hear public messages.
    @ivar elsewhere: name key -> name, the users of the other nodes as last heard.
    """

    def __init__(self) -> None:
        self.users: dict[str, User] = {}  # name key (L{name_key}) -> user
        self.sessions: tuple[Session, ...] = ()
        self.listeners: tuple[Client, ...] = ()
        self.elsewhere: dict[str, str] = {}

    def find(self, name: str) -> User | None:
        return self.users.get(name_key(name))

    def online_count(self) -> int:
        return len(self.users.keys() | self.elsewhere.keys())

    def online(self) -> list[str]:
        """Everyone, on this node and (as last heard) on the others, sorted."""
        names = {**self.elsewhere, **{key: u.name for key, u in self.users.items()}}
        return sorted(names.values(), key=str.casefold)

    def add(self, session: Session) -> None:
        """A new session, with a user of its own."""
        self.attach(session, session.user)
        self.sessions = (*self.sessions, session)

    def remove(self, session: Session) -> bool:
        """Forget C{session}; True when its user has no session left."""
        self.sessions = tuple(s for s in self.sessions if s is not session)
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

    def fanout(self, event: Event, sessions: tuple[Session, ...] | None = None) -> None:
        """Deliver one event to every session (or those given) and every listener."""
        deliver(self.sessions if sessions is None else sessions, event)
        for client in self.listeners:
            try:
                client.deliver(event)
            except Exception:
                log.failure("delivering to listener {peer} failed", peer=client.peer)
