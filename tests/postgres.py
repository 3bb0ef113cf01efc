"""A fresh PostgreSQL schema per test, and a TCP proxy that plays an unreachable database.

Tests that need PostgreSQL skip when it is not reachable, unless the CI variable is set:
then they fail, so CI cannot pass without having tested it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

POSTGRES_URL = os.environ.get("CHATD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/test")
START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections use a new, empty schema (dropped after the test); its
    application_name is the schema's name, so a test can drop its own connections."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL} ({e}); start it with {START}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"t_{secrets.token_hex(6)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        drop_connections(admin, schema)
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def drop_connections(admin: psycopg.Connection[Any], application_name: str) -> None:
    """What a PostgreSQL restart does to a node: its connections are gone."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    )


def admin_connection() -> psycopg.Connection[Any]:
    return psycopg.connect(POSTGRES_URL, autocommit=True)


class Outage:
    """A TCP proxy in front of PostgreSQL that a test can cut (the database is unreachable:
    connections drop, new ones are refused) and restore on the same port.

    Plain threads, not the reactor: a server opens its store on the reactor thread (blocking,
    as at start-up), and the proxy must answer meanwhile.
    """

    def __init__(self, pg_url: str) -> None:
        self._url = urlsplit(pg_url)
        self._upstream = (self._url.hostname or "127.0.0.1", self._url.port or 5432)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port = 0
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        """The test's URL through the proxy."""
        user = f"{self._url.username}@" if self._url.username else ""
        return urlunsplit(self._url._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def restore(self) -> None:
        outage = self

        class Forward(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream = socket.create_connection(outage._upstream)
                outage._track(self.request, upstream)
                threading.Thread(target=_pump, args=(upstream, self.request), daemon=True).start()
                _pump(self.request, upstream)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Forward)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def cut(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.update(socks)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_RDWR)
