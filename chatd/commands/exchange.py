"""/exchange: PrivatBank's exchange rates for the last few days, as a table for the room.

Only the words and the table live here; fetching, caching and the bank's failures are
L{chatd.rates}. C{exchange 2 KZT} works without the slash too (seed 000 sends it so).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import treq
from twisted.internet.defer import Deferred

from chatd.commands import CommandError, Context, Services, UsageError, command
from chatd.rates import DayFailed, DayRates, Rate, RatesClient, api_date

MAX_DAYS = 10
MAX_CURRENCIES = 10
DEFAULT_CURRENCIES = ("USD", "EUR")
NB_NOTE = "NB: PrivatBank has no rate of its own; the National Bank of Ukraine's is shown."
_CODE = re.compile(r"[A-Z]{3}\Z")

# One client per server (in its Services' state), so its cache and in-flight requests
# are shared by all users.
STATE_KEY = "exchange"


@dataclass(frozen=True)
class Request:
    days: int
    currencies: tuple[str, ...]

    def __str__(self) -> str:
        return f"exchange {self.days} {' '.join(self.currencies)}"


def parse_args(args: str) -> Request:
    """C{<days> [CUR ...]} (spaces or commas); L{UsageError} says what is wrong."""
    words = [w for w in re.split(r"[\s,]+", args) if w]
    if not words:
        raise UsageError(f"say for how many days, 1 to {MAX_DAYS}")
    first, codes = words[0], words[1:]
    if not (first.isascii() and first.isdigit()):
        raise UsageError(
            f"first say for how many days (1 to {MAX_DAYS}), then the currencies; "
            f"{_quote(first)} is not a number"
        )
    if len(first) > 2 or not 1 <= int(first) <= MAX_DAYS:
        raise UsageError(f"days go from 1 to {MAX_DAYS}, not {_quote(first)}")
    currencies: list[str] = []
    for word in codes:
        code = word.upper()
        if not _CODE.match(code):
            raise UsageError(
                f"{_quote(word)} is not a currency code; use three letters such as USD or KZT"
            )
        if code not in currencies:
            currencies.append(code)
    if len(currencies) > MAX_CURRENCIES:
        raise UsageError(f"at most {MAX_CURRENCIES} currencies at once")
    return Request(int(first), tuple(currencies) or DEFAULT_CURRENCIES)


def _quote(word: str) -> str:
    return repr(word if len(word) <= 20 else word[:20] + "...")


def _amount(value: float) -> str:
    # Rates run from ~0.001 UAH (old BYR) to ~50 UAH: keep four significant decimals.
    return f"{value:.4f}" if value >= 0.01 else f"{value:.6f}"


def render(results: Sequence[DayRates | DayFailed], currencies: Sequence[str]) -> str:
    """The table the room sees; L{CommandError} when there is nothing worth showing."""
    answered = [r for r in results if isinstance(r, DayRates) and r.rates]
    if not answered:
        raise CommandError(_nothing(results))
    known = sorted(set().union(*(r.rates for r in answered)))
    unknown = [c for c in currencies if c not in known]
    if unknown:
        which = "currency" if len(unknown) == 1 else "currencies"
        raise CommandError(
            f"PrivatBank has no rates for the {which} {', '.join(unknown)}; "
            f"it knows {', '.join(known)}"
        )

    rows: list[tuple[str, ...]] = []  # a rate row has 4 or 5 cells, a note row 2
    for result in results:
        when = api_date(result.day)
        if isinstance(result, DayFailed):
            rows.append((when, f"not available: {result.reason}"))
        elif not result.rates:
            rows.append((when, "no rates published"))
        else:
            for code in currencies:
                rows.append(_row(when, code, result.rates.get(code)))
    sale_w = max([len("sale")] + [len(r[2]) for r in rows if len(r) > 2])
    buy_w = max([len("purchase")] + [len(r[3]) for r in rows if len(r) > 2])

    lines = ["PrivatBank exchange rates, UAH per unit:"]
    lines.append(f"{'date':<10}  cur  {'sale':>{sale_w}}  {'purchase':>{buy_w}}")
    for row in rows:
        if len(row) == 2:
            lines.append(f"{row[0]}  {row[1]}")
        else:
            cells = f"{row[0]}  {row[1]}  {row[2]:>{sale_w}}  {row[3]:>{buy_w}}"
            lines.append(f"{cells}  {row[4]}" if len(row) > 4 else cells)
    if any(len(row) > 4 for row in rows):
        lines.append(NB_NOTE)
    return "\n".join(lines)


def _row(when: str, code: str, rate: Rate | None) -> tuple[str, ...]:
    if rate is None:
        return (when, code, "-", "-")
    cells = (when, code, _amount(rate.sale), _amount(rate.purchase))
    return (*cells, "NB") if rate.nb else cells


def _nothing(results: Sequence[DayRates | DayFailed]) -> str:
    """Why no day has rates, as briefly as is true."""
    reasons = [r.reason if isinstance(r, DayFailed) else "no rates published" for r in results]
    if len(set(reasons)) == 1:
        days = ", ".join(api_date(r.day) for r in results)
        if reasons[0] == "no rates published":
            return f"PrivatBank has published no rates for {days}; try more days"
        return f"no exchange rates: {reasons[0]}"
    return "no exchange rates: " + "; ".join(
        f"{api_date(r.day)}: {why}" for r, why in zip(results, reasons, strict=True)
    )


def answer(ctx: Context, args: str, client: RatesClient) -> Deferred[None]:
    """Parse, fetch, and show the table to the caller and (unless configured off) the room."""
    request = parse_args(args)

    def show(results: list[DayRates | DayFailed]) -> None:
        table = render(results, request.currencies)
        ctx.reply(table)
        if ctx.services.config.exchange_broadcast:
            ctx.announce(f"{ctx.name} asked: {request}\n{table}", others_only=True)

    return client.recent(request.days).addCallback(show)


def client_for(services: Services) -> RatesClient:
    """The server's client: real treq, the server's clock and persistent cache."""
    known = services.state.get(STATE_KEY)
    if known is not None:
        return known
    config = services.config
    client = RatesClient(
        treq,
        config.exchange_url,
        services.clock,
        services.cache,
        timeout=config.exchange_timeout,
        concurrency=config.exchange_concurrency,
    )
    install(services, client)
    return client


def install(services: Services, client: RatesClient) -> None:
    """Use C{client} on this server (tests hand it one built on StubTreq)."""
    services.state[STATE_KEY] = client


def setup(services: Services) -> None:
    client_for(services)


@command(
    "exchange",
    example="/exchange 3 USD EUR",
    usage=f"<days 1-{MAX_DAYS}> [CUR ...]",
    bare=True,
    counted=True,
    setup=setup,
)
def exchange(ctx: Context, args: str) -> Deferred[None]:
    """PrivatBank exchange rates for the last days (USD and EUR unless you name currencies)."""
    return answer(ctx, args, client_for(ctx.services))
