"""Account secrets and login rules: password hashes, tokens, and slowing down guessers.

Passwords are kept as salted scrypt hashes at OWASP's minimum cost (N=2^17, r=8, p=1: 128 MiB
and about half a second per check, on purpose), so a check runs in a thread pool, never on
the reactor thread. A hash made at a lower cost is replaced at the next successful login.
Tokens are random UUIDs; only their SHA-256 is stored, so a copy of the database does not
log anyone in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.commands import CommandError
from chatd.store import Account, Store

log = Logger(namespace="chatd.accounts")

# OWASP's Password Storage Cheat Sheet: scrypt with N >= 2^17, r = 8, p = 1.
_N, _R, _P = 2**17, 8, 1


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # OpenSSL refuses past maxmem, 32 MiB by default; N=2^17 needs 128 * r * (N + p + 2)
    # bytes (128 MiB), and the limit is raised for that and no more, plus a margin.
    maxmem = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem)


def hash_password(password: str) -> str:
    """A self-describing salted hash: C{scrypt$n$r$p$salt$hash}."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    got = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    return hmac.compare_digest(got, bytes.fromhex(digest))


def needs_rehash(stored: str) -> bool:
    """Whether C{stored} was made at a lower cost than today's (an older chatd's N=2^14)."""
    _, n, r, p, *_ = stored.split("$")
    return (int(n), int(r), int(p)) < (_N, _R, _P)


# Checked when the name is unknown, so a wrong name costs as long as a wrong password.
NOBODY = f"scrypt${_N}${_R}${_P}$" + "00" * 16 + "$" + "00" * 64


def new_token() -> str:
    return str(uuid.uuid4())


def token_hash(token: str) -> str:
    """How a token is looked up: its SHA-256 (a token has 122 random bits; no salt needed)."""
    return hashlib.sha256(token.strip().lower().encode("ascii", "replace")).hexdigest()


class Throttle:
    """Refuses a key (a name, an address) after C{limit} failures within C{window} seconds.

    The refusal lasts until the oldest of those failures is C{window} seconds old.
    """

    def __init__(self, clock: IReactorTime, limit: int = 5, window: float = 300.0) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """Seconds until C{key} may try again; 0 when it may now."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        now = self.clock.seconds()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def failed(self, key: str) -> None:
        if len(self._failures) > 10000:
            for stale in [k for k in self._failures if not self.wait(k)]:
                self._failures.pop(stale, None)
        self._failures.setdefault(key, deque(maxlen=self.limit)).append(self.clock.seconds())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


class Accounts:
    """Creating accounts and checking secrets; the Room moves sessions once this says yes.

    @param in_thread: runs a slow function off the reactor thread, returning a Deferred.
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        in_thread: Callable[..., Deferred[Any]],
    ) -> None:
        self.store = store
        self.clock = clock
        self.in_thread = in_thread
        self.by_name = Throttle(clock)
        self.by_address = Throttle(clock)
        # A failure is counted only once its slow check ends, so without these a guesser
        # could start any number of checks before the throttle knew of one.
        self._checking_names: set[str] = set()
        self._checking_addresses: set[str] = set()

    def refusal(self, name: str | None, address: str) -> str | None:
        """Why a login attempt is refused before it is checked, or None."""
        wait = max(self.by_address.wait(address), self.by_name.wait(name.casefold()) if name else 0)
        if not wait:
            return None
        about = (
            f"for {name}" if name and self.by_name.wait(name.casefold()) else "from your address"
        )
        return f"too many failed logins {about}; try again in {int(wait) + 1} seconds"

    async def create(self, name: str, password: str | None, last_seen: int) -> str:
        """Create the account; returns its first token. Fails with L{NameTaken}."""
        hashed = None if password is None else await self.in_thread(hash_password, password)
        token = new_token()
        await self.store.create_account(
            name, hashed, token_hash(token), self.clock.seconds(), last_seen
        )
        return token

    async def with_password(self, name: str, password: str, address: str) -> tuple[Account, str]:
        """The account, and a new token for this device; L{CommandError} when refused.

        One check at a time per name and per address: the others are refused, not queued.
        """
        refused = self.refusal(name, address)
        if refused:
            raise CommandError(refused)
        key = name.casefold()
        if key in self._checking_names:
            raise CommandError(f"a login for {name} is already being checked; wait for its answer")
        if address in self._checking_addresses:
            raise CommandError(
                "a login from your address is already being checked; wait for its answer"
            )
        self._checking_names.add(key)
        self._checking_addresses.add(address)
        try:
            return await self._check_password(name, password, address)
        finally:
            self._checking_names.discard(key)
            self._checking_addresses.discard(address)

    async def _check_password(self, name: str, password: str, address: str) -> tuple[Account, str]:
        account = await self.store.account(name)
        stored = account.password_hash if account is not None else None
        ok = await self.in_thread(check_password, password, stored or NOBODY)
        if account is not None and stored is None:
            raise CommandError(f"{account.name} has no password; log in with /auth <token>")
        if account is None or not ok:
            self.by_name.failed(name.casefold())
            self.by_address.failed(address)
            raise CommandError("wrong name or password")
        self.by_name.succeeded(name.casefold())
        if needs_rehash(stored):
            await self._rehash(account.name, password)
        token = new_token()
        await self.store.add_token(account.name, token_hash(token), self.clock.seconds())
        return account, token

    async def _rehash(self, name: str, password: str) -> None:
        """Store C{password} hashed at today's cost; the login goes on if this fails."""
        try:
            hashed = await self.in_thread(hash_password, password)
            await self.store.set_password_hash(name, hashed)
        except Exception:
            log.failure("could not store a stronger password hash for {name}", name=name)
        else:
            log.info("the password hash of {name} was upgraded to scrypt N={n}", name=name, n=_N)

    def revoke(self, token: str) -> Deferred[None]:
        """C{token} logs nobody in any more."""
        return self.store.remove_token(token_hash(token))

    async def with_token(self, token: str, address: str) -> Account | None:
        """The account this token belongs to, or None when unknown.

        L{CommandError} when the address is refused: that is not "unknown", which a caller
        may answer by creating an account.
        """
        refused = self.refusal(None, address)
        if refused:
            raise CommandError(refused)
        account = await self.store.account_for_token(token_hash(token))
        if account is None:
            self.by_address.failed(address)
        return account
