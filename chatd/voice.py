"""What the chat says, to whom, in order: replies, errors, notices to everyone, closing a
connection. Everything goes through the L{Outbox}, so it is heard after the messages that
were sent before it.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.conversation import Conversations
from chatd.events import Error, Event, Notice
from chatd.link import Link
from chatd.members import Members, deliver
from chatd.outbox import Outbox
from chatd.people import Session, User


class Voice:
    """The chat's own voice on one node.

    @ivar before_notice: runs before a notice to everyone (the crowd announces this turn's
        arrivals first, under the names they arrived with).
    """

    def __init__(self, outbox: Outbox, members: Members, link: Link, rooms: Conversations) -> None:
        self.outbox = outbox
        self.members = members
        self.link = link
        self.rooms = rooms
        self.before_notice: Callable[[], None] = lambda: None

    def tell(self, session: Session, text: str) -> None:
        self.event(session, Notice(text))

    def error(self, session: Session, text: str) -> None:
        self.event(session, Error(text))

    def event(self, session: Session, event: Event) -> None:
        self.outbox.later(lambda: deliver((session,), event))

    def tell_user(self, user: User, event: Event) -> None:
        """Every device of C{user}."""
        self.outbox.later(lambda: deliver(tuple(user.sessions), event))

    def notice_all(
        self,
        text: str,
        exclude: Session | None = None,
        skip: frozenset[str] = frozenset(),
        room: str | None = None,
        about: str | None = None,
        subject: tuple[str, ...] = (),
    ) -> None:
        """A notice to everyone on every node (but C{exclude} and the users named in C{skip}),
        or to everyone in the room called C{room}; C{about} and C{subject} as L{Notice}'s."""
        self.before_notice()
        if room is None:
            sessions = self.members.sessions
        else:
            conversation = self.rooms.get(room)
            sessions = () if conversation is None else self.rooms.sessions(conversation)
        recipients = tuple(
            s for s in sessions if s is not exclude and (not skip or s.user.key not in skip)
        )
        notice = Notice(text, room, about, subject)
        link = self.link

        def tell() -> None:  # the other nodes too hear it after what was said before it
            deliver(recipients, notice)
            link.noticed(notice)

        self.outbox.later(tell)

    def close(self, session: Session, reason: str) -> None:
        """Close a session once everything it has been told is on its way; from now on,
        what it sends is ignored (lines after C{/exit} in the same packet, say)."""
        session.closing = True
        self.outbox.later(lambda: session.client.close(reason))
