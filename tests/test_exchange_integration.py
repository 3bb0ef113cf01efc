"""exchange over real sockets: the chatd service, telnet users, and a local PrivatBank."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.web.server import Site

from tests.support import line_client
from tests.test_rates import Bank, fixture

ROW = r"^\* \d\d\.\d\d\.\d{4}  KZT  0\.0828    0\.0828  NB$"


class EveryDay(Bank):
    """Answers every date with the 01.12.2014 rates (the real clock's today is not in 2014)."""

    def answer(self, day: str) -> tuple[int, bytes]:
        return self.answers.get(day, self.answers.get("*", (200, fixture("01.12.2014.json"))))


@pytest_twisted.async_yield_fixture
async def bank_at() -> Any:
    """Serve a L{Bank} on a free loopback port: C{url = bank_at(bank)}; closed after the
    test (name it before C{serve}, so the chat servers stop first)."""
    ports: list[Any] = []

    def listen(bank: Bank) -> str:
        port = reactor.listenTCP(0, Site(bank), interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}/p24api/exchange_rates"

    yield listen
    for port in ports:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_telnet_user_asks_everyone_sees(bank_at, serve):
    bank = EveryDay()
    url = bank_at(bank)
    server = await serve(doors=("line",), exchange_url=url)
    alice = await line_client(server.ports["line"])
    bob = await line_client(server.ports["line"])
    name = alice.lines[0].split()[-1]
    alice.send("exchange 2 KZT")
    await alice.expect(r"^\* PrivatBank exchange rates, UAH per unit:$")
    await alice.expect(r"^\* date        cur    sale  purchase$")
    await alice.expect(ROW)
    await alice.expect(ROW)
    await alice.expect(r"^\* NB: PrivatBank has no rate of its own")
    await bob.expect(rf"^\* {name} asked: exchange 2 KZT$")
    await bob.expect(ROW)
    assert len(bank.uris) == 2 and all(b"?json&date=" in uri for uri in bank.uris)

    alice.send("/exchange 2 XYZ")
    await alice.expect(r"^! PrivatBank has no rates for the currency XYZ; it knows AUD, ")
    alice.send("exchange 11")
    await alice.expect(r"^! days go from 1 to 10, not '11'; usage: /exchange ")
    alice.close()
    bob.close()


@pytest_twisted.ensureDeferred
async def test_bank_answering_500_or_garbage(bank_at, serve):
    bank = EveryDay()
    bank.answers["*"] = (500, b"Internal Server Error")
    url = bank_at(bank)
    server = await serve(doors=("line",), exchange_url=url)
    alice = await line_client(server.ports["line"])
    alice.send("exchange 2 KZT")
    await alice.expect(r"^! no exchange rates: PrivatBank answered HTTP 500$")
    bank.answers["*"] = (200, fixture("garbage.html"))
    alice.send("exchange 1")
    await alice.expect(r"^! no exchange rates: PrivatBank sent an answer that is not JSON$")
    alice.close()


@pytest_twisted.ensureDeferred
async def test_bank_down_and_slow_the_server_keeps_running(bank_at, serve):
    # A port that was open a moment ago: connecting is refused.
    closed = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    url = f"http://127.0.0.1:{closed.getHost().port}/rates"
    await closed.stopListening()
    server = await serve(doors=("line",), exchange_url=url)
    alice = await line_client(server.ports["line"])
    alice.send("exchange 2 USD")
    await alice.expect(r"^! no exchange rates: cannot reach PrivatBank: connection refused$")
    alice.send("/exchange 1")
    await alice.expect(r"^! no exchange rates: cannot reach PrivatBank")
    alice.close()
    await server.stop()  # the next server uses the same data directory

    slow = EveryDay()
    slow.hold = True
    url = bank_at(slow)
    server = await serve(doors=("line",), exchange_url=url, exchange_timeout=0.2)
    alice = await line_client(server.ports["line"])
    alice.send("exchange 1 USD")
    await alice.expect(r"^! no exchange rates: PrivatBank did not answer within 0.2 s$")
    alice.close()


@pytest_twisted.ensureDeferred
async def test_past_days_survive_a_restart_in_the_store(bank_at, serve):
    bank = EveryDay()
    url = bank_at(bank)
    for run in (1, 2):
        server = await serve(doors=("line",), exchange_url=url)
        alice = await line_client(server.ports["line"])
        alice.send("exchange 3 USD")
        await alice.expect(r"^\* \d\d\.\d\d\.\d{4}  USD  15\.7000   15\.3500$")
        alice.close()
        await server.stop()  # a restart
        # The first run asks for all three days; after the restart only today is asked.
        assert len(bank.uris) == {1: 3, 2: 4}[run]
    newest = max(bank.days[:3], key=lambda d: datetime.strptime(d, "%d.%m.%Y"))
    assert bank.days[3] == newest
