"""Who each IRC client has been told is in its channels, kept once for all of them.

A member-list update (L{Presence}) carries a room's whole list. Were each connection to keep
its own copy and diff every update against it, n people joining would cost n² in memory and
time. Instead the door keeps one L{Roster} per channel: the list as last updated and what
the latest update changed (worked out once, for every connection). A connection keeps a
L{View} per channel it shows: only where what it was told differs from the roster (the
names it was shown on JOIN a moment before an update, a rename or quit it was told of
early), which the next update clears.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.people import name_key

KEPT = 4  # recent updates per channel remembered, so a late copy of one changes nothing

Names = dict[str, str]  # name key -> name


class Change:
    """One member-list update of one channel: who came and went, worked out once.

    @ivar size: the channel's members before or after it, whichever were more: a channel
        that was or is crowded is told no arrivals or departures (L{IRCDoor._presence}),
        so not even the update that empties a crowd costs a line per client per leaver.
    """

    __slots__ = ("seq", "joined", "gone", "size", "_online", "_lines")

    def __init__(
        self, seq: int, joined: list[tuple[str, str]], gone: list[tuple[str, str]], size: int
    ):
        self.seq = seq
        self.joined = joined
        self.gone = gone
        self.size = size
        self._online: frozenset[str] | None = None
        self._lines: dict[tuple[str, str, str], bytes] = {}

    def line(self, command: str, param: str, name: str, make: Callable[..., bytes]) -> bytes:
        """C{make(command, param, name)}: the line telling of C{name}, made once for every
        connection told (each is told of the same comings and goings)."""
        key = (command, param, name)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = make(command, param, name)
        return line

    def online(self, read: Callable[[], list[str]]) -> frozenset[str]:
        """Who is online (name keys), read once for every connection told of this update:
        someone gone from a channel but still online left it (PART), else the chat (QUIT)."""
        if self._online is None:
            self._online = frozenset(name_key(n) for n in read())
        return self._online


class Roster:
    """A channel's members as its latest update said, and that update's changes."""

    __slots__ = ("names", "seq", "recent", "holders")

    def __init__(self) -> None:
        self.names: Names = {}
        self.seq = 0
        self.holders = 0  # connections showing the channel: none, and the roster goes
        self.recent: list[tuple[object, Change]] = []  # (update, its change), newest last

    def change(self, update: object, names: list[str]) -> Change:
        """The change C{update} (listing C{names}) makes, worked out on its first reader."""
        for seen, change in self.recent:
            if seen is update:
                return change
        now = {name_key(n): n for n in names}
        old = self.names
        gone = [(k, n) for k, n in old.items() if k not in now]
        joined = [(k, n) for k, n in now.items() if k not in old]
        self.seq += 1
        self.names = now
        change = Change(self.seq, joined, gone, max(len(old), len(now)))
        self.recent = [*self.recent[-(KEPT - 1) :], (update, change)]
        return change


class View:
    """What one connection was told of one channel's members: the roster as of update
    C{seq}, but without C{missing} and with C{extra}."""

    __slots__ = ("seq", "missing", "extra")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.missing: set[str] | None = None
        self.extra: Names | None = None

    def has(self, roster: Roster, key: str) -> bool:
        if self.extra is not None and key in self.extra:
            return True
        return key in roster.names and (self.missing is None or key not in self.missing)

    def add(self, roster: Roster, key: str, name: str) -> None:
        if self.missing is not None:
            self.missing.discard(key)
        if key not in roster.names:
            if self.extra is None:
                self.extra = {}
            self.extra[key] = name

    def remove(self, roster: Roster, key: str) -> None:
        if self.extra is not None:
            self.extra.pop(key, None)
        if key in roster.names:
            if self.missing is None:
                self.missing = set()
            self.missing.add(key)


class Rosters:
    """Every channel's roster, shared by the door's connections."""

    def __init__(self) -> None:
        self._rosters: dict[str, Roster] = {}

    def get(self, channel: str) -> Roster:
        roster = self._rosters.get(channel)
        if roster is None:
            roster = self._rosters[channel] = Roster()
        return roster

    def view(self, channel: str, names: list[str], me: str) -> View:
        """A connection's view of C{channel} now that it was shown C{names} (and itself)."""
        roster = self.get(channel)
        roster.holders += 1
        view = View(roster.seq)
        shown = {name_key(n): n for n in names}
        shown.setdefault(name_key(me), me)
        for key, name in shown.items():
            if key not in roster.names:
                view.add(roster, key, name)
        if len(shown) != len(roster.names) or view.extra:
            for key in roster.names:
                if key not in shown:
                    view.remove(roster, key)
        return view

    def release(self, channel: str) -> None:
        """A connection stopped showing C{channel}; with the last, its roster goes (a
        room that ends keeps no list here; a new one starts empty)."""
        roster = self._rosters.get(channel)
        if roster is not None:
            roster.holders -= 1
            if roster.holders <= 0:
                del self._rosters[channel]
