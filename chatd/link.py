"""What a node tells the other nodes of its chat, as the Room sees it.

The Room calls a L{Link} at each point where another node must hear of something. A single
node has L{Alone}, which does nothing: no cluster code runs on its message path. A cluster
has L{chatd.cluster.ClusterLink}, which carries the same calls over the bus and hands what
the other nodes say back to the Room.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from twisted.internet import defer

from chatd.commands import Elsewhere
from chatd.events import Message, Notice
from chatd.members import Members


class Link(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def published(self, message: Message) -> None:
        """A public message of ours is saved and shown here."""

    def whispered(self, message: Message) -> None:
        """A whisper: its recipient, or the sender's other devices, may be elsewhere."""

    def noticed(self, notice: Notice) -> None:
        """A notice to everyone (joins, leaves, renames, mutes)."""

    def present(self, names: list[str]) -> None:
        """This node's users changed (all of them)."""

    def moderated(self, change: dict[str, Any]) -> None:
        """A mute, or a message an account spent (its allowance is shared)."""

    def registered(self, name: str) -> None:
        """A new account: nobody elsewhere may take its name."""

    def report(self, name: str, by: Hashable) -> None:
        """A report of C{name}, a user on another node (that node counts it)."""

    def who(self) -> defer.Deferred[tuple[list[str], bool]]:
        """Everyone online, asked now, and False; the last answer and True (it may be out
        of date) if the cluster cannot tell at once."""

    def sessions_of(self, account: str) -> defer.Deferred[Elsewhere]:
        """C{account}'s sessions on the other nodes, asked now."""

    def members_of(self, room: str, names: list[str]) -> None:
        """Who is in C{room} on this node now (the default room's are everyone)."""

    def room_changed(self, state: str) -> None:
        """A room's state changed here (made, topic, kick, invitation): its JSON."""

    def invited(self, name: str, notice: Notice) -> None:
        """Tell C{name}, a person on another node, of an invitation (with its fields:
        IRC shows it as an INVITE line)."""


class Alone:
    """The link of a node that is the whole chat."""

    def __init__(self, members: Members) -> None:
        self.members = members

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def published(self, message: Message) -> None:
        pass

    def whispered(self, message: Message) -> None:
        pass

    def noticed(self, notice: Notice) -> None:
        pass

    def present(self, names: list[str]) -> None:
        pass

    def moderated(self, change: dict[str, Any]) -> None:
        pass

    def registered(self, name: str) -> None:
        pass

    def report(self, name: str, by: Hashable) -> None:
        pass

    def who(self) -> defer.Deferred[tuple[list[str], bool]]:
        return defer.succeed((self.members.online(), False))

    def sessions_of(self, account: str) -> defer.Deferred[Elsewhere]:
        return defer.succeed(Elsewhere([], []))

    def members_of(self, room: str, names: list[str]) -> None:
        pass

    def room_changed(self, state: str) -> None:
        pass

    def invited(self, name: str, notice: Notice) -> None:
        pass
