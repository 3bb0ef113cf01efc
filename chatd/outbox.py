"""One order for everything the chat says.

A public message is delivered only after the store has saved it (so nothing anyone saw can
be lost by a crash); whatever is decided after it (notices, whispers, replies, a flood
disconnect, the close after C{/exit}) waits behind it. With nothing waiting for a save, an
action runs at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.logger import Logger

log = Logger(namespace="chatd.outbox")

Action = Callable[[], object]


class Slot:
    """A place in the order whose action is decided later (when a save answers)."""

    __slots__ = ("ready", "action")

    def __init__(self, action: Action | None = None) -> None:
        self.ready = False
        self.action = action


class Outbox:
    """A FIFO of actions; each runs once it and everything before it is ready."""

    def __init__(self) -> None:
        self._queue: deque[Slot] = deque()

    def __bool__(self) -> bool:
        return bool(self._queue)

    def later(self, action: Action) -> None:
        """Run C{action} now, or after the slots still waiting if there are any."""
        if self._queue:
            slot = Slot(action)
            slot.ready = True
            self._queue.append(slot)
        else:
            action()

    def reserve(self, action: Action | None = None) -> Slot:
        """A slot at the end of the order; L{fill} it when its action is known."""
        slot = Slot(action)
        self._queue.append(slot)
        return slot

    def fill(self, slot: Slot, action: Action | None = None) -> None:
        """C{slot} is ready (with C{action}, if given): run what can run now."""
        if action is not None:
            slot.action = action
        slot.ready = True
        queue = self._queue
        while queue and queue[0].ready:
            done = queue.popleft().action
            try:
                if done is not None:
                    done()
            except Exception:  # one broken delivery must not hold up everything after it
                log.failure("a delivery from the outbox failed")
