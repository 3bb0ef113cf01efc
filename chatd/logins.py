"""Accounts on the chat: register, log in (with a password or a token), log out.

A login moves a session to its account's user, whatever device it is on; a logout makes it
a guest again. Every move tells the others once ("Sam is now Ann"), keeps the names index
right, and an account that was away is sent what it missed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from chatd.accounts import Accounts
from chatd.config import Config
from chatd.crowd import Crowd
from chatd.errors import CommandError
from chatd.events import History, Identity
from chatd.gate import Gate, standing_key
from chatd.link import Link
from chatd.members import Members
from chatd.names import Names
from chatd.people import Session, User
from chatd.rooms import Rooms
from chatd.scheduling import Scheduler, cancelled_text
from chatd.sequence import Sequence
from chatd.store import UNAVAILABLE, Account, NameTaken, Store, StoreUnavailable, log_failed
from chatd.voice import Voice

log = Logger(namespace="chatd.logins")


class Logins:
    """Moves sessions between guests and accounts."""

    def __init__(
        self,
        config: Config,
        clock: Any,
        store: Store,
        accounts: Accounts,
        members: Members,
        names: Names,
        voice: Voice,
        crowd: Crowd,
        sequence: Sequence,
        scheduler: Scheduler,
        link: Link,
        gate: Gate,
        rooms: Rooms,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.accounts = accounts
        self.members = members
        self.names = names
        self.voice = voice
        self.crowd = crowd
        self.sequence = sequence
        self.scheduler = scheduler
        self.link = link
        self.gate = gate
        self.rooms = rooms

    def register(self, session: Session, name: str, password: str) -> defer.Deferred[str]:
        """C{/register}: a new account called exactly C{name}; fires with its token."""
        if session.user.account is not None:
            raise CommandError(f"you are logged in as {session.user.account}; /logout first")
        shortest = self.config.min_password_length
        if len(password) < shortest:
            raise CommandError(f"a password has at least {shortest} characters")
        problem = self.names.problem(name, session.user)
        if problem is not None:
            raise CommandError(problem)
        return self._create(session, name, password)

    def register_account(
        self, session: Session, nickname: str, password: str | None = None
    ) -> defer.Deferred[tuple[str, str]]:
        """A new account named C{nickname}, or a free variant of it; fires with (name, token).

        Without a password the account logs in with its token only (minechat).
        """
        name = self.names.variant(nickname, session.user)
        return self._create(session, name, password).addCallback(lambda token: (name, token))

    def _create(self, session: Session, name: str, password: str | None) -> defer.Deferred[str]:
        self.names.reserve(name)  # nobody takes it while the hash runs
        peer = session.client.peer
        d = defer.ensureDeferred(
            self.accounts.create(name, password, self.sequence.newest_shown, peer)
        )

        def created(token: str) -> str:
            log.info("{session} registered {name}", session=session, name=name)
            self.move(session, name, token, seen=None)
            self.link.registered(name)
            return token

        def failed(failure: Any) -> Any:
            self.names.release(name)
            failure.trap(NameTaken)
            raise CommandError(f"the name {name} belongs to an account; pick another")

        return d.addCallbacks(created, failed)

    def login(self, session: Session, name: str, password: str) -> defer.Deferred[None]:
        """C{/login}: log this session in to an account with a password."""

        async def check() -> None:
            account, token = await self.accounts.with_password(name, password, session.client.peer)
            self.move(session, account.name, token, account.last_seen, account.rooms)
            if session.user.account == account.name:
                session.token = token  # this device's own: /logout cancels it

        return defer.ensureDeferred(check())

    def login_with_token(self, session: Session, token: str) -> defer.Deferred[str | None]:
        """Log in with a token; fires with the account name, or None when it is unknown."""

        async def check() -> str | None:
            account: Account | None = await self.accounts.with_token(token, session.client.peer)
            if account is None:
                return None
            self.move(session, account.name, token, account.last_seen, account.rooms)
            return account.name

        return defer.ensureDeferred(check())

    def move(
        self,
        session: Session,
        name: str,
        token: str | None,
        seen: int | None,
        rooms: tuple[str, ...] = (),
    ) -> None:
        """Move C{session} to the account's user (one user, however many devices).

        @param seen: the last message id the account saw; what came after it is sent when
            the account was offline. None sends nothing (a new account).
        @param rooms: the account's rooms (rejoined; those the guest was in are kept too).
        """
        old = session.user
        if session not in old.sessions:
            return  # the connection went while the password was checked
        before = standing_key(old)
        session.token = None
        if old.account == name:
            session.deliver(Identity(name, name, token))
            return
        if old.account is not None and len(old.sessions) == 1:
            self.remember_seen(old.account)
        self.guest_gone(old, session)
        target = self.members.find(name)
        online = target is not None and target is not old and target.account == name
        if online:
            assert target is not None
            if self.members.detach(session):
                self.voice.notice_all(
                    f"{old.name} is now known as {name}",
                    exclude=session,
                    about="renamed",
                    subject=(old.name, name),
                )
                self.rooms.gone(old)  # the guest is no more: out of its rooms, no ghost
            self.members.attach(session, target)
        elif len(old.sessions) == 1:
            was = old.name
            self.members.rename(old, name)
            old.account = name
            if was != name:
                self.voice.notice_all(
                    f"{was} is now known as {name}",
                    exclude=session,
                    about="renamed",
                    subject=(was, name),
                )
        else:
            self.members.detach(session)
            self.members.attach(session, User(name, self.clock.seconds(), account=name))
            self.voice.notice_all(
                f"{name} joined", exclude=session, about="joined", subject=(name,)
            )
        self.gate.carry(before, session)
        session.deliver(Identity(name, name, token))
        if not online:
            self.rooms.rejoin(session, rooms)
        else:
            self.rooms.current(session)  # the account's rooms, not those it had as a guest
            self.rooms.tell_rooms(session.user)
        self.crowd.changed()
        if seen is not None and not online:
            self.catch_up(session, name, seen)

    def logout(self, session: Session) -> None:
        """This session becomes a guest again, and the token /login gave it stops working;
        the account's other devices stay logged in."""
        user = session.user
        account = user.account
        if account is None:
            raise CommandError("you are not logged in")
        guest = self.names.guest()
        before = standing_key(user)
        if len(user.sessions) == 1:
            self.remember_seen(account)
            self.members.rename(user, guest)
            user.account = None
            self.voice.notice_all(
                f"{account} is now known as {guest}",
                exclude=session,
                about="renamed",
                subject=(account, guest),
            )
        else:
            self.members.detach(session)
            self.members.attach(session, User(guest, self.clock.seconds()))
            self.voice.notice_all(
                f"{guest} joined", exclude=session, about="joined", subject=(guest,)
            )
            if user.rooms:  # the account's rooms stay with its other devices
                self.rooms.current(session)
                self.rooms.tell_rooms(session.user)
        self.gate.carry(before, session)
        session.deliver(Identity(guest))
        self.crowd.changed()
        token, session.token = session.token, None
        if token is not None:

            def failed(failure: Any) -> None:
                log_failed(log, failure, "revoking the token of {s} failed", s=session)
                self.voice.error(
                    session,
                    "you are logged out here, but the login token of this device could not be "
                    "cancelled (the database is unreachable); it still logs in",
                )

            self.accounts.revoke(token).addErrback(failed)

    def guest_gone(self, user: User, told: Session | None = None) -> None:
        """A guest left or logged in: what it scheduled can never be sent (only that guest
        could send it); C{told} hears so."""
        if user.account is not None:
            return
        dropped = self.scheduler.drop_owner(user)
        if dropped and told is not None:
            self.voice.tell(told, cancelled_text(dropped))

    def remember_seen(self, account: str) -> None:
        d = self.store.set_last_seen(account, self.sequence.newest_shown)
        d.addErrback(lambda f: log_failed(log, f, "saving what {a} saw failed", a=account))

    def catch_up(self, session: Session, account: str, seen: int) -> None:
        """Send what the account missed: public messages since C{seen}, kept whispers."""
        since = self.clock.seconds() - self.config.history_ttl

        async def send() -> None:
            newest = self.sequence.newest_shown
            rooms = tuple(c.name for c in self.rooms.joined(session.user))
            missed = await self.store.messages(seen, newest, since, self.config.catch_up, rooms)
            if missed:
                session.deliver(History(missed, "missed while you were away"))
            if session in session.user.sessions:
                kept = await self.store.take_whispers(account)
                if kept:
                    self.voice.tell_user(session.user, History(kept, "private messages while away"))

        def failed(failure: Any) -> None:
            log_failed(log, failure, "catching {a} up failed", a=account)
            why = UNAVAILABLE if failure.check(StoreUnavailable) else "please try again later"
            self.voice.error(
                session, f"what you missed while away could not be read: {why} (/history)"
            )

        defer.ensureDeferred(send()).addErrback(failed)
