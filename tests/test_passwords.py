"""Password hashes at OWASP's cost, and older hashes upgraded at the next login."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted

from chatd.accounts import check_password, hash_password, needs_rehash
from tests.postgres import pg_url  # noqa: F401 - a fixture
from tests.support import line_client


def old_hash(password: str) -> str:
    """What chatd stored before: scrypt at N=2^14 (16 MiB), below today's guidance."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def test_new_hashes_use_owasps_scrypt_cost_and_check():
    stored = hash_password("correct horse")
    algorithm, n, r, p, salt, digest = stored.split("$")
    assert (algorithm, n, r, p) == ("scrypt", str(2**17), "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 64
    assert check_password("correct horse", stored)
    assert not check_password("correct horsf", stored)
    assert not needs_rehash(stored)
    assert needs_rehash(old_hash("x"))
    assert check_password("x", old_hash("x"))  # old hashes still check


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest_twisted.ensureDeferred
async def test_an_account_with_an_old_hash_logs_in_and_is_rehashed(serve, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else ""
    server = await serve(doors=("line",), storage_url=url)
    store = server.room.store
    await store.create_account("Alice", old_hash("correct horse"), "0" * 64, 0.0, 0)
    server.room.names.reserve("Alice")
    alice = await line_client(server.ports["line"])
    alice.send("/login Alice correct horse")
    await alice.expect(r"^\* you are Alice \(logged in\)$")
    stored = (await store.account("Alice")).password_hash
    assert stored.startswith(f"scrypt${2**17}$8$1$")
    assert check_password("correct horse", stored)
    # The new hash logs in; a wrong password still does not.
    again = await line_client(server.ports["line"])
    again.send("/login Alice correct horse")
    await again.expect(r"^\* you are Alice \(logged in\)$")
    again.send("/login Alice wrong horse")
    await again.expect(r"wrong name or password")
    assert (await store.account("Alice")).password_hash == stored  # not rehashed again
