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
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.errors import CommandError
from chatd.ratelimit import RateLimiter, duration
from chatd.store import Account, Store, StoreUnavailable

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


# Wrong passwords one name may get from one address in a sliding window before that pair
# waits: at most 18 guesses an hour per pair, and the refusal says exactly when the next
# try is welcome (when the oldest failure leaves the window).
FAILED_LOGINS = 3
FAILED_LOGIN_PERIOD = 600.0


class Accounts:
    """Creating accounts and checking secrets; the Room moves sessions once this says yes.

    Wrong passwords are counted per (name, address) pair in a sliding window
    (L{RateLimiter}, the same limiter as the message allowance), so nobody can lock an
    account's owner out by failing on purpose; a login that works clears its pair. Tokens
    are not throttled at all: one has 122 random bits, so guessing is hopeless, and a
    throttle could only ever refuse someone holding a valid one.

    @param in_thread: runs a slow function off the reactor thread, returning a Deferred.
    @param creations_per_hour: accounts one address may create per hour (0: no limit).
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        in_thread: Callable[..., Deferred[Any]],
        creations_per_hour: int = 3,
    ) -> None:
        self.store = store
        self.clock = clock
        self.in_thread = in_thread
        self.failures = RateLimiter(clock, FAILED_LOGINS, FAILED_LOGIN_PERIOD)
        self.creations = RateLimiter(clock, creations_per_hour, 3600.0)
        # A failure is counted only once its slow check ends, so without this a guesser
        # could start any number of checks before the limiter knew of one. Per address
        # only: per name, a stranger's endless checks would refuse the owner.
        self._checking: set[str] = set()

    def refusal(self, name: str, address: str) -> str | None:
        """Why a password login attempt is refused before it is checked, or None."""
        allowed, when = self.failures.can_do_action((name.casefold(), address), update=False)
        if allowed:
            return None
        wait = duration(when - self.clock.seconds())
        return f"too many failed logins for {name} from your address; try again in {wait}"

    def reconfigure(self, creations_per_hour: int) -> None:
        """A reload: accounts made this hour count against the new allowance."""
        self.creations.reconfigure(creations_per_hour, 3600.0)

    async def create(self, name: str, password: str | None, last_seen: int, address: str) -> str:
        """Create the account; returns its first token. Fails with L{NameTaken}, or with
        L{CommandError} when C{address} has created its allowance this hour."""
        allowed, when = self.creations.can_do_action(address)
        if not allowed:
            limit = self.creations.limit
            raise CommandError(
                f"your address has created {limit} account{'s' if limit != 1 else ''} this "
                f"hour; try again in {duration(when - self.clock.seconds())}"
            )
        try:
            hashed = None if password is None else await self.in_thread(hash_password, password)
            token = new_token()
            await self.store.create_account(
                name, hashed, token_hash(token), self.clock.seconds(), last_seen
            )
        except BaseException:
            self.creations.undo(address)  # no account was made
            raise
        return token

    async def with_password(self, name: str, password: str, address: str) -> tuple[Account, str]:
        """The account, and a new token for this device; L{CommandError} when refused.

        One check at a time per address: the others are refused, not queued.
        """
        refused = self.refusal(name, address)
        if refused:
            raise CommandError(refused)
        if address in self._checking:
            raise CommandError(
                "a login from your address is already being checked; wait for its answer"
            )
        self._checking.add(address)
        try:
            return await self._check_password(name, password, address)
        finally:
            self._checking.discard(address)

    async def _check_password(self, name: str, password: str, address: str) -> tuple[Account, str]:
        account = await self.store.account(name)
        stored = account.password_hash if account is not None else None
        ok = await self.in_thread(check_password, password, stored or NOBODY)
        if account is not None and stored is None:
            raise CommandError(f"{account.name} has no password; log in with /auth <token>")
        key = (name.casefold(), address)
        if account is None or not ok:
            self.failures.can_do_action(key)  # counted: refusal() said there was room
            raise CommandError("wrong name or password")
        self.failures.reset(key)
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
        except StoreUnavailable:
            pass  # the store logs the outage once; the next login upgrades it
        except Exception:
            log.failure("could not store a stronger password hash for {name}", name=name)
        else:
            log.info("the password hash of {name} was upgraded to scrypt N={n}", name=name, n=_N)

    def revoke(self, token: str) -> Deferred[None]:
        """C{token} logs nobody in any more."""
        return self.store.remove_token(token_hash(token))

    async def with_token(self, token: str, address: str) -> Account | None:
        """The account this token belongs to, or None when unknown (never refused: see the
        class docstring). C{address} is kept for the caller's logs and future rules."""
        return await self.store.account_for_token(token_hash(token))
