"""Flood control for every connection, whatever door it came through and whatever it sends.

Three caps, each switched off by 0 in C{[flood]}: input lines per second per connection,
concurrent connections per address, and new connections per address per minute. The Room
asks L{Flood.admit} before it lets a connection in and L{Flood.line} for every line.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from chatd.config import Config
from chatd.events import Error
from chatd.people import Client
from chatd.ratelimit import RateLimiter, duration


class _Bucket:
    """Lines one connection may still send at once; refills at the allowed rate."""

    __slots__ = ("tokens", "stamp", "refused")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.refused = 0  # lines dropped since the client last slowed down


class Flood:
    """The per-connection and per-address caps, on a clock."""

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        in_order: Callable[[Callable[[], None]], None] = lambda action: action(),
    ) -> None:
        """@param in_order: runs a warning or a close after what the client was told before."""
        self.clock = clock
        self._in_order = in_order
        self._new = RateLimiter(clock, config.new_connections_per_minute, 60.0)
        self.reconfigure(config)
        self.refused = 0  # connections refused over a cap (read by the metrics)
        self.disconnected = 0  # connections closed for sending too fast
        self._open: dict[str, int] = {}  # address -> connections now
        # Admitted connections; None once one is being disconnected for flooding.
        self._clients: dict[Client, _Bucket | None] = {}

    def reconfigure(self, config: Config) -> None:
        """Apply new caps (a reload); counts so far are kept, and judged by the new caps."""
        self.rate = config.lines_per_second
        self.per_address = config.connections_per_address
        self.new_per_minute = config.new_connections_per_minute
        self._new.reconfigure(config.new_connections_per_minute, 60.0)

    def admit(self, client: Client) -> str | None:
        """Let a new connection in and start counting it, or say why it is refused."""
        peer = client.peer
        if self.per_address and self._open.get(peer, 0) >= self.per_address:
            self.refused += 1
            return (
                f"too many connections from your address (at most {self.per_address} at once); "
                "close one and try again"
            )
        allowed, at = self._new.can_do_action(peer)
        if not allowed:
            self.refused += 1
            return (
                f"too many new connections from your address (at most {self.new_per_minute} "
                f"a minute); try again in {duration(at - self.clock.seconds())}"
            )
        self._open[peer] = self._open.get(peer, 0) + 1
        self._clients[client] = _Bucket(self.rate, self.clock.seconds())
        return None

    def closed(self, client: Client) -> None:
        """A connection is gone (refused ones were never counted)."""
        if client not in self._clients:
            return
        del self._clients[client]
        left = self._open.get(client.peer, 0) - 1
        if left > 0:
            self._open[client.peer] = left
        else:
            self._open.pop(client.peer, None)

    def line(self, client: Client) -> bool:
        """Whether to act on a line just received from C{client}.

        Over the cap the line is dropped and the client warned once; when it drops another
        second's worth of lines without slowing down, it is disconnected.
        """
        bucket = self._clients.get(client)
        if bucket is None:
            return False  # refused, or being disconnected for flooding
        rate = self.rate
        if not rate:
            return True
        now = self.clock.seconds()
        tokens = bucket.tokens + (now - bucket.stamp) * rate
        bucket.stamp = now
        if tokens >= rate:
            tokens = rate
            bucket.refused = 0
        if tokens >= 1:
            bucket.tokens = tokens - 1
            return True
        bucket.tokens = tokens
        bucket.refused += 1
        if bucket.refused == 1:
            warning = Error(
                f"you are sending more than {rate:g} lines a second; that line was dropped. "
                "Slow down, or you will be disconnected"
            )
            self._in_order(lambda: client.deliver(warning))
        elif bucket.refused > rate:
            self._clients[client] = None
            self.disconnected += 1

            def disconnect() -> None:
                client.deliver(Error("disconnected for sending too many lines too fast"))
                client.close("flooding")

            self._in_order(disconnect)
        return False
