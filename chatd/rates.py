"""PrivatBank's archive of exchange rates, fetched with treq.

One request per day: C{{base}?json&date=DD.MM.YYYY}. The client is the only place that
talks to the bank, so everything that protects the bank and the room lives here:

 - a past day never changes, so its answer is kept in the room's persistent store and is
   asked for once per server, not once per command (today's answer is kept only in memory,
   for a minute);
 - identical requests in flight are made once and their answer shared;
 - at most C{concurrency} requests are in flight, each given C{timeout} seconds;
 - every way the bank can fail becomes a L{RatesError} whose message is for the user.

The HTTP client is injected (the C{treq} module, or C{treq.testing.StubTreq} in tests), and
so is the clock: nothing here reads the global reactor.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from twisted.internet import error as neterror
from twisted.internet import protocol
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss

log = Logger(namespace="chatd.rates")

DATE_FORMAT = "%d.%m.%Y"
MAX_BODY = 1 << 20  # a real answer is ~5 KB; anything past this is not PrivatBank's archive
_CODE = re.compile(r"[A-Z]{3}\Z")


class RatesError(Exception):
    """A day's rates cannot be had; the message says why, in words for the user."""


class Cache(Protocol):
    """The part of the room's store the client uses: a persistent string key/value cache."""

    def cache_get(self, key: str) -> Deferred[str | None]: ...

    def cache_put(self, key: str, value: str) -> Deferred[None]: ...


class HTTP(Protocol):
    """The part of treq's module-level API the client uses (StubTreq has it too)."""

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]: ...


class MemoryCache:
    """A L{Cache} in a dict, for tests."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def cache_get(self, key: str) -> Deferred[str | None]:
        return succeed(self.data.get(key))

    def cache_put(self, key: str, value: str) -> Deferred[None]:
        self.data[key] = value
        return succeed(None)


@dataclass(frozen=True)
class Rate:
    """UAH for one unit of C{currency}.

    @ivar nb: PrivatBank does not trade this currency, so sale and purchase are the
        National Bank of Ukraine's rate.
    """

    currency: str
    sale: float
    purchase: float
    nb: bool = False


@dataclass(frozen=True)
class DayRates:
    """One day's answer; C{rates} is empty when the bank published none for the day."""

    day: date
    rates: Mapping[str, Rate]


@dataclass(frozen=True)
class DayFailed:
    """A day whose rates could not be had, and why (for the user)."""

    day: date
    reason: str


def api_date(day: date) -> str:
    return day.strftime(DATE_FORMAT)


def cache_key(day: date) -> str:
    return f"privatbank:{api_date(day)}"


def _number(value: Any) -> float | None:
    """A usable rate, or None: JSON may hold strings, nulls, zeros or even NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def parse(day: date, body: bytes | str) -> DayRates:
    """Read one archive answer; raise L{RatesError} when it is not one.

    Entries that are unusable on their own (no three-letter code, no rate at all) are
    skipped rather than failing the day: the rest of the table is still right.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RatesError("PrivatBank sent an answer that is not JSON") from None
    entries = data.get("exchangeRate") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise RatesError("PrivatBank sent an answer without an exchangeRate list")
    rates: dict[str, Rate] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        code = entry.get("currency")
        if not isinstance(code, str) or not _CODE.match(code):
            continue
        sale, purchase = _number(entry.get("saleRate")), _number(entry.get("purchaseRate"))
        if sale is not None and purchase is not None:
            rates[code] = Rate(code, sale, purchase)
            continue
        # The archive has cash rates only for the currencies PrivatBank trades.
        nb_sale = _number(entry.get("saleRateNB"))
        nb_purchase = _number(entry.get("purchaseRateNB")) or nb_sale
        if nb_purchase is not None:
            rates[code] = Rate(code, nb_sale or nb_purchase, nb_purchase, nb=True)
    return DayRates(day, rates)


class _Body(protocol.Protocol):
    """Reads a response body of at most L{MAX_BODY} bytes.

    Unlike C{treq.collect}, cancelling (the timeout) closes the connection, so a bank that
    stalls halfway through an answer does not keep a socket open.
    """

    def __init__(self) -> None:
        self.finished: Deferred[bytes] = Deferred(canceller=self._stop)
        self.chunks: list[bytes] = []
        self.size = 0

    def _stop(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > MAX_BODY:
            self._stop(self.finished)
            self.finished.errback(
                RatesError(f"PrivatBank sent an answer over {MAX_BODY // 1024} KB")
            )
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


class RatesClient:
    """Exchange rates by day from PrivatBank's archive API."""

    def __init__(
        self,
        http: HTTP,
        base_url: str,
        clock: IReactorTime,
        cache: Cache,
        timeout: float = 10.0,
        concurrency: int = 4,
        fresh_for: float = 60.0,
    ) -> None:
        """
        @param timeout: seconds for one request, from sending it to the last byte; 0: none.
        @param concurrency: requests in flight at once; 0: no limit.
        @param fresh_for: seconds an answer that is not persisted (today's) is reused.
        """
        self.http = http
        self.base_url = base_url
        self.clock = clock
        self.cache = cache
        self.timeout = timeout
        self.fresh_for = fresh_for
        self._limit = DeferredSemaphore(concurrency) if concurrency > 0 else None
        self._inflight: dict[date, list[Deferred[DayRates]]] = {}
        self._fresh: dict[date, tuple[float, DayRates]] = {}

    def reconfigure(self, base_url: str, timeout: float, concurrency: int) -> None:
        """New settings (a reload); requests already waiting or in flight finish as they are."""
        self.base_url = base_url
        self.timeout = timeout
        self._limit = DeferredSemaphore(concurrency) if concurrency > 0 else None

    def today(self) -> date:
        """The UTC date of the clock: days are counted back from it."""
        return datetime.fromtimestamp(self.clock.seconds(), tz=UTC).date()

    def url(self, day: date) -> str:
        joiner = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{joiner}json&date={api_date(day)}"

    def recent(self, count: int) -> Deferred[list[DayRates | DayFailed]]:
        """The last C{count} days up to today, oldest first; a failed day does not fail the rest."""
        today = self.today()
        days = [today - timedelta(days=back) for back in range(count - 1, -1, -1)]
        return gatherResults([self._settled(day) for day in days])

    def day(self, day: date) -> Deferred[DayRates]:
        """One day's rates; fails with L{RatesError}."""
        fresh = self._fresh.get(day)
        if fresh is not None and fresh[0] > self.clock.seconds():
            return succeed(fresh[1])
        waiters = self._inflight.get(day)
        first = waiters is None
        if waiters is None:
            waiters = self._inflight[day] = []

        def forget(d: Deferred[DayRates]) -> None:
            if d in waiters:
                waiters.remove(d)

        mine: Deferred[DayRates] = Deferred(canceller=forget)
        waiters.append(mine)
        if first:
            Deferred.fromCoroutine(self._load(day)).addBoth(self._answer, day)
        return mine

    def _answer(self, result: DayRates | Failure, day: date) -> None:
        """Give one load's result to everyone who asked for the day while it ran."""
        for waiter in self._inflight.pop(day, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _settled(self, day: date) -> Deferred[DayRates | DayFailed]:
        def failed(failure: Failure) -> DayFailed:
            if failure.check(RatesError):
                return DayFailed(day, str(failure.value))
            log.failure("Exchange rates for {day} failed", failure, day=api_date(day))
            return DayFailed(day, "unexpected error, logged on the server")

        return self.day(day).addErrback(failed)

    async def _load(self, day: date) -> DayRates:
        key = cache_key(day)
        past = day < self.today()
        if past:
            cached = await self._cached(key)
            if cached is not None:
                try:
                    return parse(day, cached)
                except RatesError:
                    log.warn("Cached exchange rates {key} are unreadable; asking again", key=key)
        if self._limit is None:
            body = await self._fetch(self.url(day))
        else:
            body = await self._limit.run(self._fetch, self.url(day))
        rates = parse(day, body)
        if past and rates.rates:
            self._store(key, body.decode("utf-8"))
        else:
            now = self.clock.seconds()
            self._fresh = {d: v for d, v in self._fresh.items() if v[0] > now}
            self._fresh[day] = (now + self.fresh_for, rates)
        return rates

    async def _cached(self, key: str) -> str | None:
        """The stored answer, or None; a broken store only costs a request."""
        try:
            return await self.cache.cache_get(key)
        except Exception:
            log.failure("Reading {key} from the cache failed", key=key)
            return None

    def _store(self, key: str, value: str) -> None:
        """Keep a past day's answer; the user need not wait for the store to say it did."""
        d = Deferred.fromCoroutine(self._put(key, value))
        d.addErrback(lambda f: log.failure("Caching {key} failed", f, key=key))

    async def _put(self, key: str, value: str) -> None:
        await self.cache.cache_put(key, value)

    def _fetch(self, url: str) -> Deferred[bytes]:
        """GET one URL: its body, or a L{RatesError} saying what went wrong."""
        d: Deferred[Any] = self.http.get(url)
        d.addCallback(self._read)
        if self.timeout > 0:
            d.addTimeout(self.timeout, self.clock, onTimeoutCancel=self._timed_out)
        return d.addErrback(self._explain, url)

    def _read(self, response: Any) -> Deferred[bytes]:
        def done(body: bytes) -> bytes:
            if response.code != 200:
                raise RatesError(f"PrivatBank answered HTTP {response.code}")
            return body

        reader = _Body()
        response.deliverBody(reader)
        return reader.finished.addCallback(done)

    def _timed_out(self, result: Any, timeout: float) -> Any:
        # Cancelling a treq request fails it with ResponseNeverReceived, not CancelledError,
        # so addTimeout's own translation to TimeoutError would not see it.
        if isinstance(result, Failure):
            raise RatesError(f"PrivatBank did not answer within {timeout:g} s")
        return result

    def _explain(self, failure: Failure, url: str) -> Failure:
        if failure.check(RatesError):
            return failure
        if failure.check(neterror.ConnectionRefusedError):
            raise RatesError("cannot reach PrivatBank: connection refused")
        if failure.check(neterror.DNSLookupError):
            raise RatesError("cannot reach PrivatBank: its host name was not found")
        if failure.check(neterror.ConnectError):
            raise RatesError("cannot reach PrivatBank: the connection failed")
        if failure.check(ResponseNeverReceived, ResponseFailed, neterror.ConnectionLost):
            raise RatesError("PrivatBank closed the connection before answering")
        log.failure("Fetching {url} failed", failure, url=url)
        raise RatesError("the request to PrivatBank failed (logged on the server)")
