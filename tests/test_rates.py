"""RatesClient against an in-memory PrivatBank (StubTreq) and a Clock: no network, no waits."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import error as neterror
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chatd.rates import (
    DayFailed,
    DayRates,
    MemoryCache,
    RatesClient,
    RatesError,
    cache_key,
    parse,
)

FIXTURES = Path(__file__).parent / "fixtures" / "privatbank"
URL = "https://api.privatbank.ua/p24api/exchange_rates"
NOW = datetime(2014, 12, 2, 12, 0, tzinfo=UTC).timestamp()  # "today" is 02.12.2014
DEC1, DEC2 = date(2014, 12, 1), date(2014, 12, 2)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class Bank(Resource):
    """PrivatBank's archive in memory: answers by date, or holds requests until released."""

    isLeaf = True

    def __init__(self, **answers: tuple[int, bytes]) -> None:
        super().__init__()
        # date "01.12.2014" -> (status, body); by default the fixture of that name
        self.answers = {k.replace("_", "."): v for k, v in answers.items()}
        self.hold = False
        self.stall = False  # send the headers and half the body, then nothing
        self.uris: list[bytes] = []
        self.held: list[Request] = []
        self.lost: list[Request] = []  # requests whose connection the client closed

    def answer(self, day: str) -> tuple[int, bytes]:
        if day in self.answers:
            return self.answers[day]
        path = FIXTURES / f"{day}.json"
        if path.exists():
            return 200, path.read_bytes()
        return 200, fixture("empty.json")

    def render_GET(self, request: Request) -> Any:
        self.uris.append(request.uri)
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        if self.stall:
            code, body = self.answer(request.args[b"date"][0].decode())
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body[: len(body) // 2])
            return NOT_DONE_YET
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        code, body = self.answer(request.args[b"date"][0].decode())
        request.setResponseCode(code)
        return body

    @property
    def days(self) -> list[str]:
        return [uri.decode().rpartition("date=")[2] for uri in self.uris]

    def release(self, stub: StubTreq, count: int | None = None) -> None:
        """Answer the held requests (the first C{count} of them)."""
        count = len(self.held) if count is None else count
        for request in self.held[:count]:
            code, body = self.answer(request.args[b"date"][0].decode())
            request.setResponseCode(code)
            request.write(body)
            request.finish()
        del self.held[:count]
        stub.flush()


def make(bank: Resource | None = None, cache: Any = None, **kw: Any) -> tuple[RatesClient, Any]:
    clock = Clock()
    clock.advance(NOW)
    stub = StubTreq(bank if bank is not None else Bank())
    client = RatesClient(stub, URL, clock, cache if cache is not None else MemoryCache(), **kw)
    return client, stub


def result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must have fired already (everything here is in memory)."""
    out: list[Any] = []

    def keep(value: Any) -> Any:
        out.append(value)
        return None if isinstance(value, Failure) else value

    d.addBoth(keep)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def reason(client: RatesClient, day: date = DEC1) -> str:
    with pytest.raises(RatesError) as caught:
        result(client.day(day))
    return str(caught.value)


# -- reading answers ------------------------------------------------------------------------


def test_parse_bank_rates_and_nb_fallback() -> None:
    day = parse(DEC1, fixture("01.12.2014.json"))
    usd, kzt = day.rates["USD"], day.rates["KZT"]
    assert (usd.sale, usd.purchase, usd.nb) == (15.7, 15.35, False)
    assert (kzt.sale, kzt.purchase, kzt.nb) == (0.0828, 0.0828, True)


def test_parse_skips_unusable_entries() -> None:
    body = (
        '{"exchangeRate": [{"currency": "USD", "saleRate": 15.7, "purchaseRate": 15.35},'
        ' {"saleRateNB": 1.0}, "junk", {"currency": "\\u001b[2J", "saleRateNB": 1.0},'
        ' {"currency": "XAU", "saleRate": "n/a"}, {"currency": "KZT", "saleRateNB": NaN},'
        ' {"currency": "PLN", "saleRate": 5.0, "purchaseRateNB": 4.4}]}'
    )
    day = parse(DEC1, body)
    assert sorted(day.rates) == ["PLN", "USD"]
    assert day.rates["PLN"].nb and day.rates["PLN"].sale == 4.4


@pytest.mark.parametrize(
    "body, why",
    [
        (fixture("garbage.html"), "PrivatBank sent an answer that is not JSON"),
        (b"\xff\xfe", "PrivatBank sent an answer that is not JSON"),
        (fixture("wrong_shape.json"), "PrivatBank sent an answer without an exchangeRate list"),
        (b"[1, 2]", "PrivatBank sent an answer without an exchangeRate list"),
        (b"null", "PrivatBank sent an answer without an exchangeRate list"),
    ],
)
def test_parse_refuses_what_is_not_an_answer(body: bytes, why: str) -> None:
    with pytest.raises(RatesError, match=why):
        parse(DEC1, body)


# -- fetching ---------------------------------------------------------------------------------


def test_recent_asks_one_url_per_day_oldest_first() -> None:
    bank = Bank()
    client, _ = make(bank)
    days = result(client.recent(2))
    assert [d.day for d in days] == [DEC1, DEC2]
    assert days[0].rates["USD"].sale == 15.7 and days[1].rates["USD"].sale == 15.8
    assert sorted(bank.uris) == [
        b"/p24api/exchange_rates?json&date=01.12.2014",
        b"/p24api/exchange_rates?json&date=02.12.2014",
    ]


def test_url_keeps_a_mirror_query() -> None:
    client, _ = make()
    client.base_url = "http://mirror/rates?key=1"
    assert client.url(DEC1) == "http://mirror/rates?key=1&json&date=01.12.2014"


def test_a_failed_day_does_not_fail_the_others() -> None:
    client, _ = make(Bank(**{"01_12_2014": (500, b"oops")}))
    first, second = result(client.recent(2))
    assert first == DayFailed(DEC1, "PrivatBank answered HTTP 500")
    assert isinstance(second, DayRates) and "USD" in second.rates


@pytest.mark.parametrize(
    "answer, why",
    [
        ((500, b"Internal Server Error"), "PrivatBank answered HTTP 500"),
        ((404, fixture("01.12.2014.json")), "PrivatBank answered HTTP 404"),
        ((200, fixture("garbage.html")), "PrivatBank sent an answer that is not JSON"),
        ((200, fixture("wrong_shape.json")), "without an exchangeRate list"),
    ],
)
def test_bad_answers(answer: tuple[int, bytes], why: str) -> None:
    client, _ = make(Bank(**{"01_12_2014": answer}))
    assert why in reason(client)


def test_an_endless_answer_is_cut() -> None:
    client, _ = make(Bank(**{"01_12_2014": (200, b" " * (2 << 20))}))
    assert reason(client) == "PrivatBank sent an answer over 1024 KB"


def test_deeply_nested_json_is_garbage_too() -> None:
    client, _ = make(Bank(**{"01_12_2014": (200, b"[" * 100_000)}))
    assert reason(client) == "PrivatBank sent an answer that is not JSON"


def test_empty_day_is_not_an_error_and_not_stored() -> None:
    cache = MemoryCache()
    client, _ = make(cache=cache)
    day = result(client.day(date(2014, 11, 30)))  # no fixture: the bank answers empty.json
    assert day == DayRates(date(2014, 11, 30), {})
    assert cache.data == {}


def test_timeout() -> None:
    bank = Bank()
    bank.hold = True
    client, _ = make(bank, timeout=5)
    d = client.day(DEC1)
    assert not d.called
    client.clock.advance(4.9)
    assert not d.called
    client.clock.advance(0.1)
    with pytest.raises(RatesError, match="PrivatBank did not answer within 5 s"):
        result(d)
    assert client.clock.getDelayedCalls() == []


def test_timeout_halfway_through_the_body_closes_the_connection() -> None:
    bank = Bank()
    bank.stall = True
    client, stub = make(bank, timeout=10)
    d = client.day(DEC1)
    stub.flush()
    assert not d.called and bank.lost == []
    client.clock.advance(10)
    stub.flush()
    with pytest.raises(RatesError, match="PrivatBank did not answer within 10 s"):
        result(d)
    assert len(bank.lost) == 1


class Refusing:
    """An HTTP client whose every request fails the way treq reports it."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        self.calls += 1
        return fail(self.error)


@pytest.mark.parametrize(
    "error, why",
    [
        (neterror.ConnectionRefusedError(), "cannot reach PrivatBank: connection refused"),
        (neterror.DNSLookupError(), "cannot reach PrivatBank: its host name was not found"),
        (neterror.TCPTimedOutError(), "cannot reach PrivatBank: the connection failed"),
        (ResponseNeverReceived([]), "PrivatBank closed the connection before answering"),
        (ValueError("surprise"), "the request to PrivatBank failed (logged on the server)"),
    ],
)
def test_unreachable(error: Exception, why: str) -> None:
    clock = Clock()
    clock.advance(NOW)
    client = RatesClient(Refusing(error), URL, clock, MemoryCache())
    assert reason(client) == why


@pytest_twisted.ensureDeferred
async def test_connection_refused_with_real_treq() -> None:
    """The real treq's error for a closed port is the one the message is chosen by."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    number = port.getHost().port
    await port.stopListening()
    client = RatesClient(
        treq, f"http://127.0.0.1:{number}/rates", reactor, MemoryCache(), timeout=5
    )
    with pytest.raises(RatesError, match="cannot reach PrivatBank: connection refused"):
        await client.day(DEC1)


# -- caching ----------------------------------------------------------------------------------


def test_past_days_are_stored_and_survive_a_new_client() -> None:
    bank, cache = Bank(), MemoryCache()
    client, _ = make(bank, cache=cache)
    result(client.day(DEC1))
    assert list(cache.data) == [cache_key(DEC1)] == ["privatbank:01.12.2014"]
    assert result(client.day(DEC1)).rates["USD"].sale == 15.7
    assert len(bank.uris) == 1

    again, _ = make(bank, cache=cache)  # as after a restart: same store, new client
    assert result(again.day(DEC1)).rates["KZT"].nb
    assert len(bank.uris) == 1


def test_today_is_not_stored_only_reused_briefly() -> None:
    bank, cache = Bank(), MemoryCache()
    client, _ = make(bank, cache=cache, fresh_for=60)
    result(client.day(DEC2))
    result(client.day(DEC2))
    assert cache.data == {} and len(bank.uris) == 1
    client.clock.advance(61)
    result(client.day(DEC2))
    assert len(bank.uris) == 2


def test_failures_are_not_cached() -> None:
    bank = Bank(**{"01_12_2014": (500, b"")})
    client, _ = make(bank)
    reason(client)
    del bank.answers["01.12.2014"]
    assert result(client.day(DEC1)).rates["USD"].sale == 15.7
    assert len(bank.uris) == 2


def test_an_unreadable_cache_entry_is_fetched_again() -> None:
    cache = MemoryCache()
    cache.data[cache_key(DEC1)] = "{not json"
    bank = Bank()
    client, _ = make(bank, cache=cache)
    assert result(client.day(DEC1)).rates["USD"].sale == 15.7
    assert bank.days == ["01.12.2014"]
    assert cache.data[cache_key(DEC1)] == fixture("01.12.2014.json").decode()


class BrokenStore:
    def cache_get(self, key: str) -> Deferred[str | None]:
        return fail(OSError("disk on fire"))

    def cache_put(self, key: str, value: str) -> Deferred[None]:
        return fail(OSError("disk on fire"))


def test_a_broken_store_only_costs_requests() -> None:
    bank = Bank()
    client, _ = make(bank, cache=BrokenStore())
    assert result(client.day(DEC1)).rates["USD"].sale == 15.7
    assert result(client.day(DEC1)).rates["USD"].sale == 15.7
    assert len(bank.uris) == 2


class SlowStore(MemoryCache):
    """A store that answers later, as SQLite in a thread does."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[Deferred[Any], Any]] = []

    def cache_get(self, key: str) -> Deferred[str | None]:
        d: Deferred[str | None] = Deferred()
        self.waiting.append((d, self.data.get(key)))
        return d

    def answer(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, value in waiting:
            d.callback(value)


# -- sharing and limiting ---------------------------------------------------------------------


def test_identical_requests_in_flight_are_made_once() -> None:
    bank = Bank()
    bank.hold = True
    client, stub = make(bank)
    first, second = client.day(DEC1), client.day(DEC1)
    third = client.recent(1)  # today, another day: its own request
    assert sorted(bank.days) == ["01.12.2014", "02.12.2014"]
    bank.release(stub)
    assert result(first) is result(second)
    assert result(first).rates["USD"].sale == 15.7
    assert [d.day for d in result(third)] == [DEC2]


def test_requests_waiting_for_the_store_are_shared_too() -> None:
    store, bank = SlowStore(), Bank()
    client, _ = make(bank, cache=store)
    first, second = client.day(DEC1), client.day(DEC1)
    assert len(store.waiting) == 1
    store.answer()
    assert result(first) is result(second) and len(bank.uris) == 1


def test_a_shared_failure_reaches_everyone() -> None:
    bank = Bank(**{"01_12_2014": (500, b"")})
    bank.hold = True
    client, stub = make(bank)
    first, second = client.day(DEC1), client.day(DEC1)
    bank.release(stub)
    for d in (first, second):
        with pytest.raises(RatesError, match="HTTP 500"):
            result(d)


def test_one_caller_giving_up_does_not_cancel_the_others() -> None:
    bank = Bank()
    bank.hold = True
    client, stub = make(bank)
    first, second = client.day(DEC1), client.day(DEC1)
    first.cancel()
    bank.release(stub)
    assert result(second).rates["USD"].sale == 15.7
    first.addErrback(lambda f: None)


def test_concurrency_cap() -> None:
    bank = Bank()
    bank.hold = True
    client, stub = make(bank, concurrency=2)
    d = client.recent(5)
    assert len(bank.held) == 2
    bank.release(stub, 1)
    assert len(bank.held) == 2 and len(bank.uris) == 3
    while bank.held:
        assert len(bank.held) <= 2
        bank.release(stub, 1)
    assert len(bank.uris) == 5
    assert [len(day.rates) > 0 for day in result(d)] == [False, False, False, True, True]


def test_the_timeout_starts_when_a_request_goes_out() -> None:
    bank = Bank()
    bank.hold = True
    client, _ = make(bank, concurrency=1, timeout=10)
    d = client.recent(2)
    client.clock.advance(10)  # the first one times out, only now is the second sent
    assert len(bank.uris) == 2 and not d.called
    client.clock.advance(10)
    assert [r.reason for r in result(d)] == ["PrivatBank did not answer within 10 s"] * 2


def test_no_limit_and_no_timeout_when_configured_off() -> None:
    bank = Bank()
    bank.hold = True
    client, stub = make(bank, concurrency=0, timeout=0)
    d = client.recent(10)
    assert len(bank.held) == 10
    assert client.clock.getDelayedCalls() == []
    bank.release(stub)
    assert len(result(d)) == 10


def test_today_is_the_clocks_utc_date() -> None:
    client, _ = make()
    assert client.today() == DEC2
    client.clock.advance(12 * 3600 - 1)  # 23:59:59 UTC
    assert client.today() == DEC2
    client.clock.advance(1)
    assert client.today() == date(2014, 12, 3)


def test_memory_cache() -> None:
    cache = MemoryCache()
    assert result(cache.cache_get("k")) is None
    result(cache.cache_put("k", "v"))
    assert result(cache.cache_get("k")) == "v"
