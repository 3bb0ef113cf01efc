"""How the nodes of one room tell each other what happened.

A bus carries JSON-ready dicts (events go through L{chatd.bus.wire.to_wire}) from the node
that publishes them to every I{other} node: the publishing node delivers to its own
sessions itself, with the sending session at hand, so its users never wait for a round
trip. L{LocalBus} is the default (one node, or several in one process); the Redis bus is
in L{chatd.bus.redis}.

Delivery: what L{Bus.publish} accepted reaches every other node once, in order, unless the
bus says otherwise: the Deferred of an event it had to drop fails with L{Undelivered} (so
the sender can be told), and when a node may have missed events of the others (an outage
longer than the bus keeps events for), the gap handlers get the highest public message id
the node saw, so it can fetch what came after it from the store. Public messages carry the
store's ids, one sequence for the whole cluster (L{Bus.last_id} is the highest seen).

Presence: every node announces the names of its users (L{Bus.set_present}); L{Bus.online}
lists everyone in the cluster, for C{/list}, and L{Bus.by_node} says who is on which node
(C{/status} asks the nodes where an account is logged in for its sessions there).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="chatd.bus")

Handler = Callable[[str, dict[str, Any]], object]  # (kind, payload), from another node
GapHandler = Callable[[int], object]  # the highest public message id seen before the gap
PRESENCE = "presence"  # the kind published when a node's users change


class Undelivered(Exception):
    """The bus dropped this event: the other nodes will never see it."""


class Bus(Service):
    """What the Room codes against; subclasses move the payloads."""

    def __init__(self) -> None:
        self.node = uuid.uuid4().hex  # this node's name on the bus (a subclass may set it)
        self.last_id = 0
        self._handlers: list[Handler] = []
        self._gap_handlers: list[GapHandler] = []
        self.present: list[str] = []  # this node's users, as last announced
        # For the metrics (chatd.metrics reads these; the bus imports nothing of it).
        self.gaps = 0  # times events may have been lost and were read from the store
        self.errors = 0  # events the bus refused
        self.observe_latency: Callable[[float], object] = lambda seconds: None

    def ping(self) -> defer.Deferred[None]:
        """Fires once the bus has answered (the health check's question); alone: at once."""
        return defer.succeed(None)

    def subscribe(self, handler: Handler) -> None:
        """Call C{handler(kind, payload)} for everything other nodes publish, in their order."""
        self._handlers.append(handler)

    def on_gap(self, handler: GapHandler) -> None:
        """Call C{handler(last_id)} when events of other nodes may have been missed."""
        self._gap_handlers.append(handler)

    def publish(self, kind: str, payload: dict[str, Any]) -> defer.Deferred[None]:
        """Send C{payload} to the other nodes; fires once the bus holds it for them, or fails
        with L{Undelivered} if it was dropped instead."""
        raise NotImplementedError

    def set_present(self, names: Iterable[str]) -> defer.Deferred[None]:
        """Announce this node's users (all of them, replacing the last announcement)."""
        raise NotImplementedError

    def online(self) -> defer.Deferred[list[str]]:
        """Everyone on every live node, sorted regardless of case."""
        raise NotImplementedError

    def by_node(self) -> defer.Deferred[dict[str, list[str]]]:
        """Every live node (by its L{node} name, this one included): its users."""
        raise NotImplementedError

    def answering(self) -> bool:
        """False while the bus is known to be away (then asking it would only wait)."""
        return True

    def _track(self, payload: dict[str, Any]) -> None:
        """Remember the highest store id of a public message (whispers are not stored)."""
        if payload.get("kind") == "message" and "to" not in payload:
            self.last_id = max(self.last_id, int(payload["id"]))

    def _deliver(self, kind: str, payload: dict[str, Any]) -> None:
        self._track(payload)
        for handler in self._handlers:
            try:
                handler(kind, payload)
            except Exception:
                log.failure("a bus handler failed on a {kind}", kind=kind)

    def _gap(self) -> None:
        self.gaps += 1
        log.info("the bus may have lost events after id {id}", id=self.last_id)
        for handler in self._gap_handlers:
            try:
                handler(self.last_id)
            except Exception:
                log.failure("a bus gap handler failed")


class LocalBus(Bus):
    """In-process and lossless. Alone it has nobody to tell; buses built with the same
    C{group} list act as the nodes of one cluster (tests of cluster behaviour, no Redis).
    """

    def __init__(self, group: list[LocalBus] | None = None, node: str | None = None) -> None:
        super().__init__()
        self.group = [] if group is None else group
        if node is not None:
            self.node = node

    def startService(self) -> None:
        super().startService()
        self.group.append(self)

    def stopService(self) -> Any:
        self.group.remove(self)
        return super().stopService()

    def publish(self, kind: str, payload: dict[str, Any]) -> defer.Deferred[None]:
        self._track(payload)
        for node in list(self.group):
            if node is not self:
                node._deliver(kind, payload)
        return defer.succeed(None)

    def set_present(self, names: Iterable[str]) -> defer.Deferred[None]:
        self.present = sorted(names, key=str.casefold)
        return self.publish(PRESENCE, {"names": self.present})

    def online(self) -> defer.Deferred[list[str]]:
        nodes = self.group if self.running else [self]
        names = {name for node in nodes for name in node.present}
        return defer.succeed(sorted(names, key=str.casefold))

    def by_node(self) -> defer.Deferred[dict[str, list[str]]]:
        nodes = self.group if self.running else [self]
        return defer.succeed({node.node: list(node.present) for node in nodes})
