"""What the IRC door's channel commands ask of the chat, in one place.

JOIN, PART, NAMES, TOPIC, LIST, WHO, KICK, INVITE and CHATHISTORY reach the chat only
through L{Channels}. Today the chat is one conversation, shown as the channel
C{default_room}; when rooms come, these methods call the Room's rooms API (join, part,
conversation(name).names() and .topic, conversations(), set_topic, kick, invite, history)
and the door stays as it is.
"""

from __future__ import annotations

from twisted.internet import defer

from chatd.errors import CommandError
from chatd.events import Event, Message
from chatd.people import Session
from chatd.room import Room

NOT_YET = "only {lobby} exists on this server for now"
HISTORY_SCAN = 1000  # recent messages a CHATHISTORY looks through


class Channels:
    """What the door's channel commands (JOIN, PART, NAMES, TOPIC, LIST, WHO, KICK, INVITE,
    CHATHISTORY) ask of the chat. Today the chat is one conversation, the channel
    C{default_room}; with rooms these become calls of the Room's rooms API."""

    def __init__(self, room: Room) -> None:
        self.room = room

    @property
    def lobby(self) -> str:
        return self.room.config.default_room

    def find(self, name: str) -> str | None:
        """The channel called C{name} (in its own spelling), or None."""
        return self.lobby if name.casefold() == self.lobby.casefold() else None

    def missing(self, name: str) -> str:
        """What to say of a channel that does not exist."""
        return NOT_YET.format(lobby=self.lobby)

    def join(self, session: Session, name: str) -> str:
        """Join C{name}; its spelling. Raises L{CommandError} when it cannot be joined."""
        found = self.find(name)
        if found is None:
            raise CommandError(self.missing(name))
        return found

    def part(self, session: Session, name: str) -> None:
        """Everyone is in the one conversation: leaving it only stops showing it here."""

    def names(self, name: str) -> list[str]:
        return self.room.online()

    def topic(self, name: str) -> str:
        return ""

    def set_topic(self, session: Session, name: str, topic: str) -> None:
        raise CommandError(f"{name} has no owner to set its topic yet; rooms are coming")

    def kick(self, session: Session, name: str, nick: str) -> None:
        raise CommandError(f"only a room's owner may kick, and {name} has no owner yet")

    def invite(self, session: Session, name: str, nick: str) -> None:
        raise CommandError(f"everyone is in {name} already")

    def conversations(self) -> list[tuple[str, int, str]]:
        """Every channel: name, people, topic (LIST)."""
        return [(self.lobby, len(self.room.online()), "")]

    def history(self, name: str) -> defer.Deferred[list[Message]]:
        """The channel's recent public messages, oldest first (CHATHISTORY looks in them)."""
        return self.room.history(HISTORY_SCAN)

    def shows(self, event: Event, name: str) -> bool:
        """Whether a public message or a member list belongs to channel C{name} (with rooms:
        its C{room} is C{name})."""
        return True
