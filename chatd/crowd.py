"""Arrivals and departures: who joined or left, and the member lists of the doors that
keep one (the browser page).

Each notice goes to everyone, so a crowd arriving at once would cost one broadcast per
person: n² deliveries. The joins and leaves of one reactor turn share one notice per kind
and one member-list update; anything the chat says later announces them first.

In a crowded room (more than C{crowd_size} people) even that is one broadcast per turn, so
a join would cost in proportion to those present: there, as large IRC channels do, nobody is
named; one line every C{crowd_summary} seconds says how many came and went ("12 joined,
3 left"), or none at all with 0, and member lists are sent at most that often.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from chatd.config import Config
from chatd.events import Notice, Presence
from chatd.link import Link
from chatd.members import Members
from chatd.people import name_key
from chatd.voice import Voice

REJOIN_GRACE = 10.0  # seconds an account's last connection may be gone before "left" is said
LIST_EVERY = 5.0  # seconds between a crowded room's member lists when crowd_summary is 0


def crowd_text(names: list[str], verb: str, count: int | None = None) -> str:
    """C{"Ann, Bob, Cy and 4 others joined"}: C{count} people in all, the first few named."""
    count = len(names) if count is None else count
    shown = ", ".join(names[:3])
    if count > 3:
        shown += f" and {count - 3} other{'s' if count > 4 else ''}"
    return f"{shown} {verb}"


class Crowd:
    """Coalesces the joins, leaves and member-list changes of one reactor turn."""

    def __init__(
        self, clock: IReactorTime, members: Members, voice: Voice, link: Link, config: Config
    ) -> None:
        self.clock = clock
        self.config = config
        self.members = members
        self.voice = voice
        self.link = link
        self.rooms = voice.rooms
        voice.before_notice = self.announce
        # (room, verb) -> names not yet announced; the default room's come first.
        self._moved: dict[tuple[str, str], list[str]] = {}
        self._moved_call: Any = None
        self._presence_call: Any = None
        self._leaving: dict[str, Any] = {}  # account's name key -> its delayed "left"
        self._told: dict[str, list[str]] = {}  # room key -> its members here, as told
        # Crowded rooms: room name -> [joined, left] not told yet, and the call telling it.
        self._tally: dict[str, list[int]] = {}
        self._tally_call: Any = None

    def stop(self) -> None:
        calls = (self._presence_call, self._moved_call, self._tally_call)
        for call in (*calls, *self._leaving.values()):
            if call is not None and call.active():
                call.cancel()
        self._leaving.clear()

    def leave_later(self, name: str) -> None:
        """An account's last connection went: say it left only if it is not back within
        L{REJOIN_GRACE} seconds (a reload, a reconnect show others nothing)."""
        key = name_key(name)
        old = self._leaving.pop(key, None)
        if old is not None and old.active():
            old.cancel()
        self._leaving[key] = self.clock.callLater(REJOIN_GRACE, self._left, key, name)
        self.changed()  # it leaves the member lists at once

    def _left(self, key: str, name: str) -> None:
        del self._leaving[key]
        if self.members.find(name) is None:
            self.moved("left", name)

    def returned(self, name: str) -> bool:
        """Whether C{name} is back before its "left" was said (nobody is told either)."""
        call = self._leaving.pop(name_key(name), None)
        if call is not None and call.active():
            call.cancel()
        return call is not None

    def moved(self, verb: str, name: str, room: str | None = None) -> None:
        """C{name} C{"joined"} or C{"left"} the room called C{room} (the default one if
        None): told at the end of this reactor turn, or summed up in a crowded room."""
        room = room or self.rooms.default.name
        if self.crowded(room):
            self._count(room, verb)
            self.changed()
            return
        self._moved.setdefault((room, verb), []).append(name)
        if self._moved_call is None:
            self._moved_call = self.clock.callLater(0, self.announce)
        self.changed()

    def announce(self) -> None:
        """Tell everyone of this turn's joins and leaves now (before what is said next)."""
        if self._moved_call is None:
            return
        if self._moved_call.active():
            self._moved_call.cancel()
        self._moved_call = None
        moved, self._moved = self._moved, {}
        for (room, verb), names in sorted(moved.items(), key=lambda kv: kv[0][1]):
            if verb != "joined":
                self.voice.notice_all(
                    crowd_text(names, verb), room=room, about=verb, subject=tuple(names)
                )
                continue
            # Each newcomer hears of the others who came with them, not of themselves.
            self.voice.notice_all(
                crowd_text(names, verb),
                skip=frozenset(name_key(n) for n in names),
                room=room,
                about=verb,
                subject=tuple(names),
            )
            if len(names) > 1:
                for name in names:
                    user = self.members.find(name)
                    if user is not None:
                        others = [n for n in names[:4] if n != name][:3]
                        text = crowd_text(others, verb, len(names) - 1)
                        told = Notice(text, room, verb, tuple(others))
                        self.voice.tell_user(user, told)

    def crowded(self, room: str) -> bool:
        """Whether more than C{crowd_size} people are in the room called C{room}; O(1)."""
        default = self.rooms.default
        if room == default.name:
            size = self.members.online_count()
        else:
            conversation = self.rooms.get(room)
            if conversation is None:
                return False
            size = len(conversation.users) + sum(map(len, conversation.elsewhere.values()))
        return size > self.config.crowd_size

    def _count(self, room: str, verb: str) -> None:
        """A crowded room's arrival or departure, for its next summary (if it has any)."""
        if self.config.crowd_summary <= 0:
            return
        self._tally.setdefault(room, [0, 0])[verb != "joined"] += 1
        if self._tally_call is None:
            self._tally_call = self.clock.callLater(self.config.crowd_summary, self._summarize)

    def _summarize(self) -> None:
        self._tally_call = None
        tally, self._tally = self._tally, {}
        for room, (joined, left) in tally.items():
            parts = [f"{joined} joined"] if joined else []
            parts += [f"{left} left"] if left else []
            self.voice.notice_all(", ".join(parts), room=room)

    def changed(self) -> None:
        """Someone came, went or was renamed: one member-list update this turn (in a
        crowded default room, at most one every few seconds)."""
        if self._presence_call is None or not self._presence_call.active():
            wait = 0.0
            if self.crowded(self.rooms.default.name):
                wait = self.config.crowd_summary or LIST_EVERY
            self._presence_call = self.clock.callLater(wait, self._update)

    def _update(self) -> None:
        self.link.present([u.name for u in self.members.users.values()])
        told, self._told = self._told, {}
        for conversation in self.rooms:
            if self.rooms.is_default(conversation):  # everyone: the other nodes hear who is out
                names = sorted((u.name for u in self.rooms.outside), key=str.casefold)
            else:
                names = [u.name for u in conversation.users]
            if told.pop(conversation.key, []) != names:
                self.link.members_of(conversation.name, names)
            if names:
                self._told[conversation.key] = names
        for gone in told:  # rooms that expired here
            self.link.members_of(gone, [])
        self.refresh()

    def retell(self) -> None:
        """Tell the other nodes every room's members again (they may have missed some)."""
        self._told.clear()
        self.changed()

    def refresh(self) -> None:
        """Send each room's member list as it stands to the doors that keep one."""
        rooms = self.rooms
        for conversation in rooms:
            if rooms.is_default(conversation) or conversation.sessions:
                event = Presence(rooms.names(conversation), True, conversation.name)
                name = conversation.name
                self.voice.outbox.later(lambda e=event, n=name: rooms.fanout(n, e))
