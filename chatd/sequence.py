"""Message ids: which to give out next, and which public messages were shown already.

Public messages are shown in id order, and each once, although in a cluster they arrive
by two ways (the bus and reading the store after a gap) and another node's id can overtake
ours. Whispers take ids from the same sequence but are not public: the order skips them.
"""

from __future__ import annotations

from collections import deque

SHOWN_KEPT = 4096  # public message ids remembered, so none is shown twice
READ_LIMIT = 1000  # messages read from the store to fill a gap in the ids, at most


class Sequence:
    """The id watermarks of one node.

    @ivar given: the last id handed to a message here (the next proposal is one more).
    @ivar shown_through: every public message up to this id has been shown (or the id
        belongs to a whisper).
    @ivar newest_shown: the highest public id shown; history and catch-up read up to it.
    """

    def __init__(self, last_id: int, remember: int = SHOWN_KEPT) -> None:
        self.given = last_id
        self.shown_through = last_id
        self.newest_shown = last_id
        self._private: set[int] = set()  # whisper ids above shown_through
        self._shown: set[int] = set()
        self._shown_order: deque[int] = deque()
        self._remember = remember

    def next_public(self) -> int:
        """The id to propose for a new public message (a cluster's store may give another)."""
        self.given += 1
        return self.given

    def next_private(self) -> int:
        """An id that no public message will have (a whisper's), when this node numbers
        alone; in a cluster a whisper's id comes from the store (L{private})."""
        return self.private(self.given + 1)

    def private(self, id: int) -> int:
        """C{id} is a whisper's, never a public message's: the order skips it."""
        self.given = max(self.given, id)
        if id == self.shown_through + 1:
            self.shown_through = id
            while self.shown_through + 1 in self._private:
                self._private.discard(self.shown_through + 1)
                self.shown_through += 1
        elif id > self.shown_through:
            self._private.add(id)
        return id

    def in_order(self, id: int) -> bool:
        """Whether every public message below C{id} has been shown."""
        return id <= self.shown_through + 1

    def show(self, id: int) -> bool:
        """Record public message C{id} as shown; False when it was shown already."""
        shown = self._shown
        if id in shown:
            return False
        if id == self.shown_through + 1:
            self.shown_through = id
            while self._private and self.shown_through + 1 in self._private:
                self._private.discard(self.shown_through + 1)
                self.shown_through += 1
        shown.add(id)
        order = self._shown_order
        order.append(id)
        if len(order) > self._remember:
            shown.discard(order.popleft())
        if id > self.newest_shown:
            self.newest_shown = id
        if id > self.given:
            self.given = id
        return True

    def shown_up_to(self, id: int) -> None:
        """Every public message up to C{id} has been shown (read from the store)."""
        if id > self.shown_through:
            self.shown_through = id
            self._private = {i for i in self._private if i > id}
