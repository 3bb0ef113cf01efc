"""chatd's Prometheus metrics, in a registry of its own per service.

Several services may run in one process (the tests do), so nothing goes to
prometheus_client's global registry. The counts are plain integers kept where things happen
(each door's L{chatd.doors.output.Turn}, L{chatd.flood.Flood}, the store worker, the bus)
and read here at scrape time; the two latencies are histograms, fed by a callable the
store and the bus are given, and kept in plain numbers too (L{Latency}). The lower layers
import nothing of this module. Every metric is described in docs/operations.md.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from chatd.room import Room

# What each kind of client calls its door (C{client.door}) -> the door's setting.
DOOR_OF = {
    "line": "line",
    "ws": "web",
    "json": "web",
    "minechat": "minechat_write",
    "minechat-read": "minechat_read",
}
DOORS = ("line", "web", "minechat_read", "minechat_write", "irc")
# Seconds; a commit or a Redis round trip normally takes well under 10 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Latency(Collector):
    """A histogram kept in plain numbers, exported when scraped.

    The store observes once per batch (at 50 messages a second, once per message) and
    prometheus_client's L{Histogram} costs more there than the Room's own work on the
    message (a lock per bucket touched); this keeps one count per bucket and a sum, and
    builds the same metric (name, buckets, C{_created}) at scrape time. Observed on the
    reactor thread, scraped there too.
    """

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        """One more observation: a bucket's upper bound includes it (C{le})."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterator[Metric]:
        bounds = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        family = HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(bounds, accumulate(self.counts), strict=True)),
            sum_value=self.sum,
        )
        # As Histogram does, unless PROMETHEUS_DISABLE_CREATED_SERIES turned it off.
        if getattr(prometheus_metrics, "_use_created", True):
            family.samples.append(Sample(f"{self.name}_created", {}, self.created))
        yield family


class ChatCollector(Collector):
    """Reads the room, the doors, the flood rules, the store and the bus when scraped."""

    def __init__(self, room: Room, turns: dict[str, Any]) -> None:
        """@param turns: door setting -> the L{Turn} its clients' output goes through."""
        self.room = room
        self.turns = turns

    def collect(self) -> Iterator[Metric]:
        room = self.room
        clients = [s.client for s in room.members.sessions] + list(room.members.listeners)
        counts = Counter(DOOR_OF.get(c.door, c.door) for c in clients)
        connections = GaugeMetricFamily(
            "chatd_connections", "Open chat connections on this node, by door", labels=["door"]
        )
        for door in sorted({*DOORS, *counts}):
            connections.add_metric([door], counts[door])
        yield connections
        yield GaugeMetricFamily(
            "chatd_users", "People online on this node (a person on two devices counts once)",
            value=len(room.members.users),
        )  # fmt: skip
        yield CounterMetricFamily(
            "chatd_messages", "Messages sent on this node, public and whispers",
            value=room.messages_sent,
        )  # fmt: skip
        deliveries = CounterMetricFamily(
            "chatd_deliveries", "Events written to clients, by door", labels=["door"]
        )
        slow = CounterMetricFamily(
            "chatd_slow_reader_drops",
            "Clients disconnected because they stopped reading their output",
            labels=["door"],
        )
        for door, turn in sorted(self.turns.items()):
            deliveries.add_metric([door], turn.writes)
            slow.add_metric([door], turn.slow_readers)
        yield deliveries
        yield slow
        yield CounterMetricFamily(
            "chatd_flood_disconnects", "Connections closed for sending lines too fast",
            value=room.gate.flood.disconnected,
        )  # fmt: skip
        yield CounterMetricFamily(
            "chatd_flood_refusals", "Connections refused over a per-address cap",
            value=room.gate.flood.refused,
        )  # fmt: skip
        yield CounterMetricFamily(
            "chatd_bus_gaps",
            "Times the bus may have lost events and the missed messages were read from the store",
            value=room.bus.gaps if room.bus is not None else 0,
        )
        errors = CounterMetricFamily(
            "chatd_errors", "Failures, by where they happened", labels=["kind"]
        )
        errors.add_metric(["store"], getattr(room.store, "errors", 0))
        errors.add_metric(["bus"], room.bus.errors if room.bus is not None else 0)
        errors.add_metric(["write"], sum(t.errors for t in self.turns.values()))
        yield errors


def registry_for(room: Room, turns: dict[str, Any], registry: CollectorRegistry) -> None:
    """Register chatd's metrics for C{room} in C{registry}, and hook up the latencies."""
    registry.register(ChatCollector(room, turns))
    store = Latency(
        "chatd_store_batch_seconds",
        "Time one batch of queries took, from the worker thread taking it to its results",
        LATENCY_BUCKETS,
    )
    bus = Latency(
        "chatd_bus_publish_seconds",
        "Time from publishing an event to Redis to its answer (cluster only)",
        LATENCY_BUCKETS,
    )
    registry.register(store)
    registry.register(bus)
    if hasattr(room.store, "observe_latency"):
        room.store.observe_latency = store.observe
    if room.bus is not None:
        room.bus.observe_latency = bus.observe
    ProcessCollector(registry=registry)  # CPU, memory and open files (the fd limit)
