"""What the IRC door's channel commands ask of the chat, in one place: a channel is a room.

JOIN, PART, NAMES, TOPIC, LIST, WHO, KICK, INVITE, MODE and CHATHISTORY reach the chat only
through L{Channels}, which calls the Room's rooms API (join, part, conversation,
conversations, set_topic, kick, invite, history). The rules stay the Room's; when it
refuses, L{Channels.refused} picks the IRC numeric that says why from the room's state.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.words.protocols import irc

from chatd.conversation import Conversation, Conversations
from chatd.errors import CommandError
from chatd.events import Message
from chatd.people import Session, name_key
from chatd.room import Room

HISTORY_SCAN = 1000  # recent messages a CHATHISTORY looks through
# A command that could not be done for a reason no other numeric names (the last room
# cannot be parted); modern servers' ERR_UNKNOWNERROR, which clients show with its text.
ERR_UNKNOWNERROR = "400"


class Refused(CommandError):
    """The Room refused a channel command: the IRC numeric that fits, and its reason."""

    def __init__(self, numeric: str, text: str) -> None:
        super().__init__(text)
        self.numeric = numeric


class Channels:
    """The door's channels are the Room's rooms, each under its own spelling."""

    def __init__(self, room: Room) -> None:
        self.room = room

    @property
    def lobby(self) -> str:
        """The default room, which every connection starts in (and may part while in
        another)."""
        return self.room.config.default_room

    def conversation(self, name: str) -> Conversation | None:
        """The room C{name} names, read as the Room reads a name (one Unicode form)."""
        return self.room.conversation(Conversations.normal(name))

    def find(self, name: str) -> str | None:
        """The channel called C{name} (in its own spelling), or None."""
        found = self.conversation(name)
        return None if found is None else found.name

    def missing(self, name: str) -> str:
        """What to say of a channel that does not exist."""
        return f"there is no room {name}; JOIN {name} makes it"

    def is_in(self, session: Session, name: str) -> bool:
        """Whether C{session}'s person is in the room called C{name}."""
        found = self.conversation(name)
        return found is not None and self.room.all_rooms.holds(session.user, found)

    def joined(self, session: Session) -> list[str]:
        """The rooms C{session}'s person is in, the default one first (unless parted)."""
        return [c.name for c in self.room.rooms.joined(session.user)]

    def join(self, session: Session, name: str) -> str:
        """Join C{name} (made if new); its spelling. Raises L{Refused} saying why not."""
        try:
            self.room.join(session, name)
        except CommandError as e:
            raise self.refused(session, name, str(e)) from e
        found = self.find(name)
        if found is None:  # the Room took a name this door cannot find again: say so
            raise Refused(irc.ERR_NOSUCHCHANNEL, f"{name} was joined but cannot be shown")
        return found

    def refused(self, session: Session, name: str, why: str) -> Refused:
        """The numeric for a JOIN the Room refused, read from the room's state: banned
        (kicked), invite-only, full, too many channels, or no such channel."""
        config = self.room.config
        found = self.conversation(name)
        user = session.user
        rooms = self.room.all_rooms
        if found is None and rooms.problem(rooms.normal(name)) is not None:
            return Refused(irc.ERR_NOSUCHCHANNEL, why)  # not a room name
        if len(self.room.rooms.joined(user)) >= config.max_rooms_per_person:
            return Refused(irc.ERR_TOOMANYCHANNELS, why)
        if found is None:
            return Refused(irc.ERR_NOSUCHCHANNEL, why)  # as many rooms as the server allows
        if found.kicked_for(user, self.room.clock.seconds()):
            return Refused(irc.ERR_BANNEDFROMCHAN, why)
        if found.invite_only and user.key not in found.invited:
            return Refused(irc.ERR_INVITEONLYCHAN, why)
        if found.count() >= config.max_room_members:
            return Refused(irc.ERR_CHANNELISFULL, why)
        return Refused(irc.ERR_NOSUCHCHANNEL, why)

    def part(self, session: Session, name: str) -> None:
        """Leave the room, the default one too (while in another). Raises L{Refused}
        saying why not: not in it, or it is the last room (nobody is in no room)."""
        try:
            self.room.part(session, name)
        except CommandError as e:
            inside = self.is_in(session, name)
            raise Refused(ERR_UNKNOWNERROR if inside else irc.ERR_NOTONCHANNEL, str(e)) from e

    def names(self, name: str) -> list[str]:
        """Who is in the room (the default room's: everyone online but who parted it)."""
        found = self.conversation(name)
        return [] if found is None else self.room.all_rooms.names(found)

    def owner(self, name: str) -> str | None:
        """The name key of the room's owner (shown with @), or None."""
        found = self.conversation(name)
        return None if found is None or found.owner is None else name_key(found.owner)

    def topic(self, name: str) -> str:
        found = self.conversation(name)
        return "" if found is None else found.topic

    def invite_only(self, name: str) -> bool:
        found = self.conversation(name)
        return found is not None and found.invite_only

    def set_topic(self, session: Session, name: str, topic: str) -> None:
        self.room.set_topic(session, name, topic)

    def kick(self, session: Session, name: str, nick: str) -> None:
        """Remove C{nick} for the configured minutes, as C{/kick} does."""
        self.room.kick(session, name, nick, self.room.config.kick_minutes)

    def invite(self, session: Session, name: str, nick: str) -> str:
        """The room becomes invite-only and C{nick} may join; their name as spelled."""
        return self.room.invite(session, name, nick)

    def conversations(self) -> list[tuple[str, int, str]]:
        """Every channel: name, people, topic (LIST)."""
        rooms = self.room.all_rooms
        return [(c.name, rooms.count(c), c.topic) for c in self.room.conversations()]

    def history(self, name: str) -> defer.Deferred[list[Message]]:
        """The channel's recent public messages, oldest first (CHATHISTORY looks in them)."""
        return self.room.history(HISTORY_SCAN, name)
