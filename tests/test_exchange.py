"""The exchange command as users see it: a Room with two text-door users, PrivatBank on StubTreq.

Everything runs in memory (StubTreq, Clock), so each line typed is answered before
C{receive} returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import error as neterror
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from chatd.commands import GROUP, Registry, discover
from chatd.commands.exchange import client_for, exchange, install
from chatd.config import Config
from chatd.rates import MemoryCache, RatesClient
from chatd.room import Room
from chatd.testing import FakeClient, MemoryStore, TestRoom
from tests.test_rates import NOW, URL, Bank, Refusing

USAGE = "usage: /exchange <days 1-10> [CUR ...]"


@dataclass
class Chat:
    room: Room
    client: RatesClient
    stub: Any
    bank: Any
    alice: FakeClient
    bob: FakeClient

    def type(self, text: str) -> list[str]:
        """Alice types a line; what she reads back."""
        self.room.receive(self.alice.session, text)
        return self.alice.take()


def chat(bank: Any = None, http: Any = None, **settings: Any) -> Chat:
    config = Config(**settings)
    clock = Clock()
    clock.advance(NOW)  # today is 02.12.2014
    names = iter(["alice", "bob"])
    store = MemoryStore()
    room = TestRoom(
        config, clock, Registry([exchange]), store, maybeDeferred, namer=lambda: next(names)
    )
    bank = Bank() if bank is None else bank
    stub = StubTreq(bank)
    client = RatesClient(
        http or stub,
        URL,
        clock,
        MemoryCache(),
        timeout=config.exchange_timeout,
        concurrency=config.exchange_concurrency,
    )
    install(room.services, client)
    room.startService()
    alice, bob = room.guest(), room.guest()
    alice.take(), bob.take()
    return Chat(room, client, stub, bank, alice, bob)


KZT_TABLE = [
    "* PrivatBank exchange rates, UAH per unit:",
    "* date        cur    sale  purchase",
    "* 01.12.2014  KZT  0.0828    0.0828  NB",
    "* 02.12.2014  KZT  0.0831    0.0831  NB",
    "* NB: PrivatBank has no rate of its own; the National Bank of Ukraine's is shown.",
]


def test_the_seed_example_asker_and_everyone_else() -> None:
    c = chat()
    assert c.type("exchange 2 KZT") == KZT_TABLE
    assert c.bob.take() == ["* alice asked: exchange 2 KZT", *KZT_TABLE]
    assert c.bank.days == ["01.12.2014", "02.12.2014"]


def test_slash_form_lowercase_and_commas() -> None:
    c = chat()
    assert c.type("/exchange 2 kzt") == KZT_TABLE
    assert c.type("/exchange 1 usd,eur, KZT") == [
        "* PrivatBank exchange rates, UAH per unit:",
        "* date        cur     sale  purchase",
        "* 02.12.2014  USD  15.8000   15.4000",
        "* 02.12.2014  EUR  20.0500   19.2500",
        "* 02.12.2014  KZT   0.0831    0.0831  NB",
        "* NB: PrivatBank has no rate of its own; the National Bank of Ukraine's is shown.",
    ]


def test_usd_and_eur_by_default() -> None:
    c = chat()
    assert c.type("exchange 2") == [
        "* PrivatBank exchange rates, UAH per unit:",
        "* date        cur     sale  purchase",
        "* 01.12.2014  USD  15.7000   15.3500",
        "* 01.12.2014  EUR  20.0000   19.2000",
        "* 02.12.2014  USD  15.8000   15.4000",
        "* 02.12.2014  EUR  20.0500   19.2500",
    ]


def test_ten_days_back_from_the_clocks_utc_date() -> None:
    c = chat()
    c.type("exchange 10 USD")
    november = [f"{d}.11.2014" for d in range(23, 31)]
    assert sorted(c.bank.days) == sorted([*november, "01.12.2014", "02.12.2014"])


def test_tiny_rates_keep_their_digits() -> None:
    c = chat()
    assert "* 02.12.2014  BYR  0.001390  0.001390  NB" in c.type("exchange 1 byr")


def test_broadcast_can_be_switched_off() -> None:
    c = chat(exchange_broadcast=False)
    assert c.type("exchange 2 KZT") == KZT_TABLE
    assert c.bob.take() == []


@pytest.mark.parametrize(
    "typed, why",
    [
        ("exchange", "say for how many days, 1 to 10"),
        ("/exchange   ", "say for how many days, 1 to 10"),
        (
            "exchange two USD",
            "first say for how many days (1 to 10), then the currencies; 'two' is not a number",
        ),
        (
            "exchange KZT 2",
            "first say for how many days (1 to 10), then the currencies; 'KZT' is not a number",
        ),
        ("exchange -1", "first say for how many days (1 to 10), then the currencies; "),
        ("exchange 2.5", "'2.5' is not a number"),
        ("exchange ２", "'２' is not a number"),
        ("exchange 0", "days go from 1 to 10, not '0'"),
        ("exchange 11 USD", "days go from 1 to 10, not '11'"),
        ("exchange 99999999999999999999999", "days go from 1 to 10, not '99999999999999999999...'"),
        ("exchange 2 US$", "'US$' is not a currency code; use three letters such as USD or KZT"),
        ("exchange 2 dollars", "'dollars' is not a currency code"),
        ("exchange 2 " + " ".join(f"A{c}A" for c in "ABCDEFGHIJK"), "at most 10 currencies"),
    ],
)
def test_bad_input(typed: str, why: str) -> None:
    c = chat()
    seen = c.type(typed)
    assert len(seen) == 1 and seen[0].startswith("! ") and seen[0].endswith(USAGE), seen
    assert why in seen[0]
    assert c.bank.uris == [] and c.bob.take() == []


def test_unknown_currency_lists_the_known_ones() -> None:
    c = chat()
    assert c.type("exchange 2 USD XYZ") == [
        "! PrivatBank has no rates for the currency XYZ; it knows AUD, AZN, BYR, CAD, CHF, "
        "CNY, CZK, DKK, EUR, GBP, GEL, HUF, ILS, JPY, KZT, MDL, NOK, PLZ, RUB, SEK, SGD, TMT, "
        "TRY, UAH, USD, UZS"
    ]
    assert c.type("exchange 1 ABC XYZ")[0].startswith(
        "! PrivatBank has no rates for the currencies ABC, XYZ; it knows AUD,"
    )
    assert c.bob.take() == []


@pytest.mark.parametrize(
    "answer, why",
    [
        ((500, b"Internal Server Error"), "PrivatBank answered HTTP 500"),
        ((200, b"<html>502 Bad Gateway</html>"), "PrivatBank sent an answer that is not JSON"),
        ((200, b'{"error": "limit"}'), "PrivatBank sent an answer without an exchangeRate list"),
    ],
)
def test_bank_failing_every_day(answer: tuple[int, bytes], why: str) -> None:
    c = chat(Bank(**{"01_12_2014": answer, "02_12_2014": answer}))
    assert c.type("exchange 2 KZT") == [f"! no exchange rates: {why}"]
    assert c.bob.take() == []


def test_bank_failing_one_day_shows_the_rest() -> None:
    c = chat(Bank(**{"01_12_2014": (500, b"")}))
    assert c.type("exchange 2 KZT") == [
        "* PrivatBank exchange rates, UAH per unit:",
        "* date        cur    sale  purchase",
        "* 01.12.2014  not available: PrivatBank answered HTTP 500",
        "* 02.12.2014  KZT  0.0831    0.0831  NB",
        "* NB: PrivatBank has no rate of its own; the National Bank of Ukraine's is shown.",
    ]


def test_days_failing_differently_are_each_explained() -> None:
    c = chat(Bank(**{"01_12_2014": (500, b""), "02_12_2014": (200, b"{}")}))
    assert c.type("exchange 3") == [
        "! no exchange rates: 30.11.2014: no rates published; 01.12.2014: PrivatBank answered "
        "HTTP 500; 02.12.2014: PrivatBank sent an answer without an exchangeRate list"
    ]


def test_empty_days() -> None:
    c = chat()
    assert c.type("exchange 3 USD")[2:4] == [
        "* 30.11.2014  no rates published",
        "* 01.12.2014  USD  15.7000   15.3500",
    ]
    c.bank.answers["02.12.2014"] = (200, b'{"exchangeRate": []}')
    c.client.clock.advance(3600)  # today's answer is only reused for a minute
    assert c.type("exchange 1") == [
        "! PrivatBank has published no rates for 02.12.2014; try more days"
    ]


def test_a_currency_missing_on_one_day() -> None:
    body = b'{"exchangeRate": [{"currency": "USD", "saleRate": 15.9, "purchaseRate": 15.5}]}'
    c = chat(Bank(**{"02_12_2014": (200, body)}))
    assert c.type("exchange 2 USD KZT")[2:] == [
        "* 01.12.2014  USD  15.7000   15.3500",
        "* 01.12.2014  KZT   0.0828    0.0828  NB",
        "* 02.12.2014  USD  15.9000   15.5000",
        "* 02.12.2014  KZT        -         -",
        "* NB: PrivatBank has no rate of its own; the National Bank of Ukraine's is shown.",
    ]


def test_timeout() -> None:
    bank = Bank()
    bank.hold = True
    c = chat(bank, exchange_timeout=3)
    assert c.type("exchange 2 USD") == []
    c.client.clock.advance(3)
    assert c.alice.take() == ["! no exchange rates: PrivatBank did not answer within 3 s"]


def test_connection_refused() -> None:
    c = chat(http=Refusing(neterror.ConnectionRefusedError()))
    assert c.type("exchange 2 USD") == [
        "! no exchange rates: cannot reach PrivatBank: connection refused"
    ]


def test_cached_days_are_not_asked_again() -> None:
    c = chat()
    c.type("exchange 2 USD")
    c.client.clock.advance(3600)
    c.type("exchange 2 EUR")
    assert c.bank.days.count("01.12.2014") == 1
    assert c.bank.days.count("02.12.2014") == 2  # today is asked again after a minute


def test_two_users_asking_at_once_share_the_requests() -> None:
    bank = Bank()
    bank.hold = True
    c = chat(bank)
    c.room.receive(c.alice.session, "exchange 2 USD")
    c.room.receive(c.bob.session, "exchange 2 KZT")
    assert len(bank.uris) == 2
    bank.release(c.stub)
    assert "* 02.12.2014  USD  15.8000   15.4000" in c.alice.take()
    assert "* 02.12.2014  KZT  0.0831    0.0831  NB" in c.bob.take()


def test_the_command_is_declared_as_the_room_expects() -> None:
    assert (exchange.name, exchange.bare, exchange.setup is not None) == ("exchange", True, True)
    ep = EntryPoint(name="exchange", value="chatd.commands.exchange:exchange", group=GROUP)
    assert discover([ep]).get("exchange") is exchange


def test_setup_builds_a_client_from_the_rooms_settings() -> None:
    config = Config(
        exchange_url="http://mirror/rates", exchange_timeout=2.5, exchange_concurrency=7
    )
    store = MemoryStore()
    room = Room(config, Clock(), Registry([exchange]), store, maybeDeferred)
    room.startService()  # runs exchange's setup
    client = client_for(room.services)
    assert (client.base_url, client.timeout, client.cache) == ("http://mirror/rates", 2.5, store)
    assert client._limit is not None and client._limit.limit == 7
    assert client.clock is room.clock and client_for(room.services) is client
