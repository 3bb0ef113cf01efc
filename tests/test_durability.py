"""The real server process: nothing anyone saw is lost when it is killed; bad data dirs.

These start C{twistd -n chatd} as a child process, the way an operator runs it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest_twisted

from tests.processes import TWISTD, free_port
from tests.support import line_client, pause

TOKEN = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"


def command(data_dir: Path, port: int) -> list[str]:
    return [
        *TWISTD,
        "-n",
        "--pidfile=",
        "chatd",
        "--line",
        f"tcp:{port}:interface=127.0.0.1",
        "--web",
        "none",
        "--minechat-read",
        "none",
        "--minechat-write",
        "none",
        "--irc",
        "none",
        "--data-dir",
        str(data_dir),
    ]


@pytest_twisted.ensureDeferred
async def test_messages_and_accounts_survive_sigkill(tmp_path, process):
    port = free_port()
    first = await process("first", command(tmp_path, port), port)
    alice = await line_client(port)
    bob = await line_client(port)
    alice.send("/register Alice correct horse")
    await alice.expect(r"^\* account Alice created")
    token = re.search(TOKEN, await alice.expect(rf"^\*   {TOKEN}$")).group(0)
    for i in range(1, 6):
        alice.send(f"remember me {i}")
    await bob.expect(r"^Alice: remember me 5$")  # seen by someone: must not be lost
    first.stop(signal.SIGKILL)
    port = free_port()
    await process("second", command(tmp_path, port), port)
    carol = await line_client(port)
    carol.send("/history")
    await carol.expect(r"^\* history \(5\):$")
    await carol.expect(r"^\[\d\d:\d\d:\d\d\] Alice: remember me 5$")
    carol.send(f"/auth {token}")
    await carol.expect(r"^\* you are Alice \(logged in\)$")
    carol.send("/register Alice another password")
    await carol.expect(r"^! you are logged in as Alice; /logout first$")


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_a_server_that_is_busy_logging(tmp_path, process):
    port = free_port()
    server = await process("server", command(tmp_path / "data", port), port)
    alice = await line_client(port)
    for _ in range(20):  # every connect and disconnect is a log line
        (await line_client(port)).close()
    server.process.send_signal(signal.SIGTERM)
    for _ in range(20):  # and more while it stops
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break  # no longer listening
    await alice.closed
    for _ in range(400):
        if server.process.poll() is not None:
            break
        await pause(0.05)
    assert server.process.poll() is not None, "the server did not stop on SIGTERM"
    text = server.log.read_text()
    assert "Received SIGTERM, shutting down." in text
    assert "Traceback" not in text


def refused(data_dir: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(data_dir, free_port()), capture_output=True, text=True, timeout=60, **kwargs
    )


def test_a_corrupt_database_stops_the_server_with_a_clear_message(tmp_path):
    (tmp_path / "chatd.sqlite3").write_bytes(b"not SQLite at all\n" * 500)
    result = refused(tmp_path)
    assert result.returncode != 0
    assert "chatd cannot start: " in result.stderr
    assert "is not a chatd database or is damaged" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_database_in_use_stops_a_second_server(tmp_path):
    holder = sqlite3.connect(tmp_path / "chatd.sqlite3")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = refused(tmp_path)
    finally:
        holder.close()
    assert result.returncode != 0
    assert "is locked: is another chatd using the data dir" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_read_only_data_dir_stops_the_server_with_a_clear_message(tmp_path):
    if os.geteuid() == 0:
        data_dir = Path("/sys")  # root may write anywhere, but not there
    else:
        data_dir = tmp_path / "read-only"
        data_dir.mkdir(mode=0o555)
    result = refused(data_dir)
    assert result.returncode != 0
    assert "chatd cannot start: cannot use the database" in result.stderr
    assert "is the data dir writable?" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_data_dir_that_cannot_be_created_is_reported(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    result = refused(tmp_path / "file" / "chatd-data")
    assert result.returncode != 0
    assert "chatd cannot start: cannot create the data dir" in result.stderr
