"""Accounts: register, log in by password or token, several devices, log out."""

from __future__ import annotations

import hashlib
import re

import pytest
import pytest_twisted
from twisted.internet import defer, task

from chatd.accounts import Accounts
from chatd.commands import CommandError
from chatd.events import Identity
from chatd.testing import MemoryStore
from tests.support import line_client, pause


class Device:
    """A connection straight into the Room, recording the events it is given."""

    door = "test"

    def __init__(self, peer: str = "10.0.0.1") -> None:
        self.peer = peer
        self.events: list = []

    def deliver(self, event) -> None:
        self.events.append(event)

    def close(self, reason: str) -> None:
        pass

    def identities(self) -> list[tuple]:
        return [(e.name, e.account, e.token) for e in self.events if isinstance(e, Identity)]


TOKEN = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest_twisted.async_yield_fixture
async def srv(serve):
    yield await serve(doors=("line",))


async def registered(srv, name="Alice", password="correct horse"):
    """A telnet user who has just registered C{name}, and the token they got."""
    client = await line_client(srv.ports["line"])
    client.send(f"/register {name} {password}")
    await client.expect(rf"^\* account {name} created")
    line = await client.expect(rf"^\*   {TOKEN}$")
    return client, re.search(TOKEN, line).group(0)


@pytest_twisted.ensureDeferred
async def test_register_logs_in_tells_the_others_and_reserves_the_name(srv):
    bob = await line_client(srv.ports["line"])
    alice = await line_client(srv.ports["line"])
    guest = alice.lines[0].split()[-1]
    alice.send("/register Alice correct horse")
    await alice.expect(r"^\* you are Alice \(logged in\)$")
    await alice.expect(r"^\* account Alice created; you are logged in\.$")
    await alice.expect(r"^\* Your token, for /auth on another device \(keep it secret\):$")
    await alice.expect(rf"^\*   {TOKEN}$")
    await bob.expect(rf"^\* {guest} is now known as Alice$")
    bob.send("/rename alice")
    await bob.expect(r"^! the name Alice belongs to an account; /login Alice <password>")
    bob.send("/register ALICE another password")
    await bob.expect(r"^! the name Alice belongs to an account")


@pytest_twisted.ensureDeferred
async def test_bad_registrations_say_what_is_wrong(srv):
    bob = await line_client(srv.ports["line"])
    bob.send("/register Bob short")
    await bob.expect(r"^! a password has at least 8 characters$")
    bob.send("/register B@d! long enough")
    await bob.expect(r"^! a name has letters, digits")
    bob.send("/register OnlyAName")
    await bob.expect(r"^! usage: /register <name> <password>$")
    assert srv.room.names.accounts == {}


@pytest_twisted.ensureDeferred
async def test_login_on_a_second_device_shares_one_user(srv):
    alice, _ = await registered(srv)
    bob = await line_client(srv.ports["line"])
    phone = await line_client(srv.ports["line"])
    phone.send("/login alice correct horse")
    await phone.expect(r"^\* you are Alice \(logged in\)$")
    phone.send("/list")
    online = await phone.expect(r"^\* online")
    assert online.count("Alice") == 1 and online.startswith("* online (2)")
    bob.send("/w Alice hi both")
    await alice.expect(r"^>> \w+: hi both$")
    await phone.expect(r"^>> \w+: hi both$")
    phone.send("/status")
    await phone.expect(
        r"^\* your sessions \(2\): telnet from 127\.0\.0\.1 .*, telnet from .*\(this one\)$"
    )


@pytest_twisted.ensureDeferred
async def test_wrong_password_unknown_name_and_unknown_token_are_refused(srv):
    await registered(srv)
    eve = await line_client(srv.ports["line"])
    eve.send("/login Alice wrong password")
    await eve.expect(r"^! wrong name or password$")
    eve.send("/login Nobody whatever12")
    await eve.expect(r"^! wrong name or password$")
    eve.send("/auth 00000000-0000-4000-8000-000000000000")
    await eve.expect(r"^! unknown token; check it, or /login <name> <password>$")
    eve.send("/list")
    assert "Alice" in await eve.expect(r"^\* online")  # eve is still a guest
    assert not any("logged in" in line for line in eve.lines)


@pytest_twisted.ensureDeferred
async def test_repeated_failures_are_slowed_down_for_that_address_only(srv):
    await registered(srv)
    eve = await line_client(srv.ports["line"])
    for _ in range(3):
        eve.send("/login Alice wrong password")
        await eve.expect(r"^! wrong name or password$")
    eve.send("/login Alice correct horse")
    await eve.expect(r"^! too many failed logins for Alice from your address; try again in \d")
    # The owner on another device and address is not locked out by eve's failures.
    room = srv.room
    owner = Device(peer="10.9.9.9")
    await room.login(room.connect(owner), "Alice", "correct horse")
    assert owner.identities()[-1][:2] == ("Alice", "Alice")


@pytest_twisted.ensureDeferred
async def test_a_burst_of_logins_is_checked_in_turn_and_slowed_down(srv):
    await registered(srv, "Bob")
    eve = await line_client(srv.ports["line"])
    eve.send(b"".join(b"/login Bob wrong%d\n" % i for i in range(10)))
    await eve.expect(r"^! wrong name or password$")
    await eve.expect(r"^! too many failed logins for Bob from your address; try again in ")
    for _ in range(100):
        answers = [line for line in eve.lines if line.startswith("! ")]
        if len(answers) == 10:
            break
        await pause(0.05)
    assert len(answers) == 10  # one answer each, in the order typed
    assert answers.count("! wrong name or password") == 3  # the window's tries; then a wait


def cheap_hash(password: str) -> str:
    """A hash in chatd's format at a tiny cost, so a test checks passwords at once."""
    salt = b"s" * 16
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16, r=1, p=1)
    return f"scrypt$16$1$1${salt.hex()}${digest.hex()}"


@pytest.fixture
def throttled():
    """Accounts on a driven clock, with Alice's password "correct horse"."""
    store = MemoryStore()
    store.create_account("Alice", cheap_hash("correct horse"), "token", 0, 0)
    clock = task.Clock()
    clock.advance(1_700_000_000)
    return Accounts(store, clock, defer.maybeDeferred), clock


def login(accounts: Accounts, password: str, name="Alice", address="10.0.0.1") -> str:
    """What a login attempt answers: "ok", or the refusal the user reads."""
    outcome = []
    defer.ensureDeferred(accounts.with_password(name, password, address)).addBoth(outcome.append)
    (result,) = outcome
    if isinstance(result, tuple):
        return "ok"
    result.trap(CommandError)
    return str(result.value)


def test_failed_logins_wait_until_the_oldest_leaves_the_window(throttled):
    accounts, clock = throttled
    for _ in range(3):
        assert login(accounts, "wrong") == "wrong name or password"
        clock.advance(60)
    refused = "too many failed logins for Alice from your address; try again in "
    assert login(accounts, "correct horse") == refused + "7m00s"  # 10 minutes after the first
    assert login(accounts, "wrong", address="10.0.0.2") == "wrong name or password"
    assert login(accounts, "wrong", name="Bob") == "wrong name or password"
    clock.advance(419)
    assert login(accounts, "correct horse") == refused + "1s"
    clock.advance(1)
    assert login(accounts, "wrong") == "wrong name or password"  # the first one left
    assert login(accounts, "correct horse") == refused + "1m00s"  # the second leaves next


def test_a_login_that_works_clears_the_failures_before_it(throttled):
    accounts, clock = throttled
    for _ in range(2):
        assert login(accounts, "wrong") == "wrong name or password"
    assert login(accounts, "correct horse") == "ok"
    for _ in range(3):
        assert login(accounts, "wrong") == "wrong name or password"
    assert login(accounts, "wrong").startswith("too many failed logins for Alice")


@pytest_twisted.ensureDeferred
async def test_auth_with_the_token_and_logout(srv):
    alice, token = await registered(srv)
    laptop = await line_client(srv.ports["line"])
    laptop.send(f"/auth {token}")
    await laptop.expect(r"^\* you are Alice \(logged in\)$")
    laptop.send("/logout")
    guest = (await laptop.expect(r"^\* you are \w+$")).split()[-1]
    await alice.expect(rf"^\* {guest} joined$")  # alice's own device stays logged in
    alice.send("/logout")
    await alice.expect(r"^\* you are \w+$")
    await laptop.expect(r"^\* Alice is now known as \w+$")
    laptop.send("/logout")
    await laptop.expect(r"^! you are not logged in$")


@pytest_twisted.ensureDeferred
async def test_an_account_cannot_rename_away_from_its_name(srv):
    alice, _ = await registered(srv)
    alice.send("/rename Alicia")
    await alice.expect(r"^! your name is your account's; /logout to chat as a guest")


@pytest_twisted.ensureDeferred
async def test_passwords_and_tokens_stay_out_of_the_audit_log(srv, tmp_path):
    alice, token = await registered(srv)
    alice.send(f"/auth {token}")
    alice.send("/login Alice correct horse")
    await alice.expect(r"^\* you are Alice \(logged in\)$")
    await alice.expect(r"^\* you are Alice \(logged in\)$")
    audit = (tmp_path / "chat_log.txt").read_text()
    assert "/register ..." in audit and "/login ..." in audit
    assert "correct horse" not in audit and token not in audit


@pytest_twisted.ensureDeferred
async def test_login_required_keeps_guests_quiet(serve):
    server = await serve(doors=("line",), login_required=True)
    guest = await line_client(server.ports["line"])
    listener = await line_client(server.ports["line"])
    guest.send("hello?")
    await guest.expect(r"^! log in first: /login <name> <password>, or /register")
    guest.send("/register Carol long enough")
    await guest.expect(r"^\* you are Carol")
    guest.send("now I may")
    await listener.expect(r"^Carol: now I may$")
    assert not any("hello?" in line for line in listener.lines)


# -- the contract the minechat door codes against ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_account_picks_a_free_variant_and_sends_identity(srv):
    room = srv.room
    first, second, junk, empty = Device(), Device(), Device(), Device()
    sessions = [room.connect(d) for d in (first, second, junk, empty)]
    name1, token1 = await room.register_account(sessions[0], "Dmitry")
    name2, token2 = await room.register_account(sessions[1], "dmitry")
    name3, _ = await room.register_account(sessions[2], " <b>Ivan  Petrov</b>!")
    name4, _ = await room.register_account(sessions[3], "@@")
    assert (name1, name2, name3) == ("Dmitry", "dmitry2", "bIvanPetrovb")
    assert room.names.owner(name4) == name4  # nothing usable was left: a guest name
    assert re.fullmatch(TOKEN, token1) and token1 != token2
    assert first.identities()[-1] == ("Dmitry", "Dmitry", token1)


@pytest_twisted.ensureDeferred
async def test_token_only_accounts_use_auth_not_login(srv):
    room = srv.room
    name, token = await room.register_account(room.connect(Device()), "Miner")
    client = await line_client(srv.ports["line"])
    client.send("/login Miner anything-at-all")
    await client.expect(r"^! Miner has no password; log in with /auth <token>$")
    client.send(f"/auth {token}")
    await client.expect(r"^\* you are Miner \(logged in\)$")


@pytest_twisted.ensureDeferred
async def test_login_with_token_fires_with_the_name_or_none(srv):
    room = srv.room
    _, token = await room.register_account(room.connect(Device()), "Miner")
    device = Device()
    session = room.connect(device)
    assert await room.login_with_token(session, "not-a-token") is None
    assert not any(e.kind == "error" for e in device.events)
    assert await room.login_with_token(session, token) == "Miner"
    assert device.identities()[-1] == ("Miner", "Miner", token)
    assert session.user is room.find("miner") and len(session.user.sessions) == 2


@pytest_twisted.ensureDeferred
async def test_unknown_tokens_never_lock_out_a_valid_one_from_the_same_address(srv):
    _, token = await registered(srv)
    guesser = await line_client(srv.ports["line"])
    for i in range(10):
        guesser.send(f"/auth 00000000-0000-4000-8000-00000000000{i}")
        await guesser.expect(r"^! unknown token")
    guesser.send(f"/auth {token}")
    await guesser.expect(r"^\* you are Alice \(logged in\)$")


@pytest_twisted.ensureDeferred
async def test_account_creation_is_limited_per_address(serve):
    server = await serve(doors=("line",), accounts_per_address_per_hour=2)
    room = server.room
    for name in ("First", "Second"):
        await room.register_account(room.connect(Device("10.1.1.1")), name)
    third = room.connect(Device("10.1.1.1"))
    try:
        await room.register_account(third, "Third")
    except CommandError as e:
        assert str(e).startswith("your address has created 2 accounts this hour; try again")
    else:
        raise AssertionError("a third account from one address was created")
    assert room.names.owner("third") is None  # the name is free again
    name, _ = await room.register_account(room.connect(Device("10.2.2.2")), "Third")
    assert name == "Third"  # another address is not affected
    client = await line_client(server.ports["line"])
    client.send("/register Fourth correct horse")  # the tests' own address: allowed
    await client.expect(r"^\* you are Fourth \(logged in\)$")
