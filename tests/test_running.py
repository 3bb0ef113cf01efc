"""Running chatd as an operator does: start-up lines, a port in use, SIGHUP, a reconnect storm.

The process tests start C{twistd -n chatd} as a child process.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from chatd.config import BACKLOG, Config
from chatd.service import build
from tests.processes import TWISTD, free_port
from tests.support import OFF, line_client, pause


async def wait_for(path: Path, text: str, process: subprocess.Popen, count: int = 1) -> str:
    """The log once C{text} is in it C{count} times (the server keeps running meanwhile)."""
    for _ in range(400):
        log = path.read_text(errors="replace") if path.exists() else ""
        if log.count(text) >= count:
            return log
        assert process.poll() is None, f"the server exited:\n{log}"
        await pause(0.025)
    raise AssertionError(f"{text!r} never appeared in the log:\n{log}")


def write_config(path: Path, messages_per_hour: int, presence_ttl: float = 30.0) -> None:
    path.write_text(
        f"[moderation]\nmessages_per_hour = {messages_per_hour}\n\n"
        f"[cluster]\npresence_ttl = {presence_ttl}\n"
    )


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_limits_and_reopens_the_audit_log_without_dropping_anyone(
    tmp_path, process
):
    config, data, log = tmp_path / "chatd.ini", tmp_path / "data", tmp_path / "chatd.log"
    write_config(config, messages_per_hour=100)
    line, web, metrics = free_port(), free_port(), free_port()
    command = [
        *TWISTD, "-n", "--pidfile=", "chatd", "--config", str(config), "--data-dir", str(data),
        "--line", f"tcp:{line}:interface=127.0.0.1", "--web", f"tcp:{web}:interface=127.0.0.1",
        "--minechat-read", "none", "--minechat-write", "none", "--irc", "none",
        "--metrics", f"tcp:{metrics}:interface=127.0.0.1",
    ]  # fmt: skip
    server = await process("chatd", command, metrics)  # its output in chatd.log
    started = await wait_for(log, "metrics: http://", server.process)
    # One line per door says how to reach it.
    assert f"line: telnet 127.0.0.1 {line}\n" in started
    assert f"web: http://127.0.0.1:{web}/ (page), ws://127.0.0.1:{web}/ws (WebSocket)" in started
    assert f"metrics: http://127.0.0.1:{metrics}/metrics and /healthz" in started
    alice, bob = await line_client(line), await line_client(line)
    alice.send("/list")  # audited in the file about to be rotated
    await alice.expect(r"online")
    alice.send("one")
    await bob.expect(r": one$")

    # What logrotate does: rename the file, then ask for a new one.
    audit = data / "chat_log.txt"
    audit.rename(data / "chat_log.txt.1")
    write_config(config, messages_per_hour=2, presence_ttl=10)
    os.kill(server.process.pid, signal.SIGHUP)
    reloaded = await wait_for(log, "reloaded the configuration", server.process)
    assert "messages_per_hour 100 -> 2" in reloaded
    assert "not applied until a restart: presence_ttl 30.0 -> 10.0" in reloaded

    # The same connections go on, under the new limit (one message is spent already).
    alice.send("two")
    await bob.expect(r": two$")
    alice.send("three")
    await alice.expect(r"you have sent 2 messages in the last hour")
    bob.send("/list")
    await bob.expect(r"online")
    for _ in range(100):
        if audit.exists() and "/list" in audit.read_text():
            break
        await pause(0.02)
    assert audit.exists(), "no new audit log after SIGHUP"
    assert "/list" in audit.read_text() and " /list" in (data / "chat_log.txt.1").read_text()
    assert audit.read_text().count("/list") == 1  # Bob's; Alice's is in the rotated file

    # A file that no longer parses changes nothing, and the server stays up.
    config.write_text("[moderation]\nmessages_per_hour = many\n")
    os.kill(server.process.pid, signal.SIGHUP)
    refused = await wait_for(log, "the configuration was not reloaded", server.process)
    assert "'many' is not a valid int" in refused
    for client in (alice, bob):  # both still connected, the server answering
        client.send("/status")
        await client.expect(r"^\* chat: 2 online")
    assert server.process.poll() is None


def test_a_port_in_use_is_one_line_and_exit_code_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "chatd",
                "--data-dir",
                str(tmp_path),
                "--web",
                "none",
                "--minechat-read",
                "none",
                "--minechat-write",
                "none",
                "--irc",
                "none",
                "--line",
                f"tcp:{port}:interface=127.0.0.1",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    # twistd passes what goes to stderr through its log: one line, without a traceback.
    (error,) = [line for line in output.splitlines() if "cannot" in line]
    assert error.endswith(
        f"chatd cannot start: the line door cannot listen on tcp:{port}:interface=127.0.0.1: "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use."
    )
    assert not (tmp_path / "chat_log.txt").exists()  # nothing else was started


@pytest_twisted.ensureDeferred
async def test_a_thousand_line_clients_connecting_at_once_are_all_greeted(tmp_path):
    clients = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * clients + 200  # both ends of every connection are in this process
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors; ulimit -Hn is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    # The door as configured by default (its backlog), on a free port; no flood caps, since
    # every client comes from one address.
    config = Config(
        **{**OFF, "line": f"tcp:0:interface=127.0.0.1:backlog={BACKLOG}"},
        data_dir=str(tmp_path), connections_per_address=0, new_connections_per_minute=0,
    )  # fmt: skip
    service = build(config, reactor)
    service.startService()
    try:
        port = service.getServiceNamed("line").port.getHost().port
        greeted = await deferToThread(connect_at_once, port, clients)
        assert greeted == clients
    finally:
        await defer.maybeDeferred(service.stopService)
        if soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_at_once(port: int, count: int) -> int:
    """Open C{count} connections before reading any; how many were welcomed (a thread)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)
    selector = selectors.DefaultSelector()
    received = {}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = b""
    greeted = 0
    give_up = time.monotonic() + 120  # a safety net for a broken server, not a measurement
    try:
        while greeted < count and time.monotonic() < give_up:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                received[sock] += data
                if b"Welcome to chatd" in received[sock] or not data:
                    selector.unregister(sock)
                    greeted += b"Welcome to chatd" in received[sock]
    finally:
        for sock in sockets:
            sock.close()
    return greeted


UNITS = Path(__file__).resolve().parent.parent / "docs" / "systemd"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        why = f"{name} is not installed (Debian: apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    return found


@pytest_twisted.ensureDeferred
async def test_doors_from_socket_activation_as_the_systemd_unit_gives_them(tmp_path):
    """systemd-socket-activate passes sockets as systemd does (LISTEN_FDS, LISTEN_FDNAMES);
    chatd takes them by index, as docs/systemd/chatd.service tells it to."""
    activate = tool("systemd-socket-activate")
    line, web = free_port(), free_port()
    log = tmp_path / "chatd.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                activate,
                "--fdname=chatd.socket:chatd.socket",
                "-l",
                f"127.0.0.1:{line}",
                "-l",
                f"127.0.0.1:{web}",
                sys.executable,
                "-m",
                "chatd",
                "--data-dir",
                str(tmp_path / "data"),
                "--line",
                "systemd:domain=INET:index=0",
                "--web",
                "systemd:domain=INET:index=1",
                "--minechat-read",
                "none",
                "--minechat-write",
                "none",
                "--irc",
                "none",
            ],  # fmt: skip
            stdout=output,
            stderr=output,
        )
    try:
        await wait_for(log, f"Listening on 127.0.0.1:{web}", process)
        alice = await line_client(line)  # the first connection starts chatd
        alice.send("hello")
        started = await wait_for(log, "web: http://", process)
        assert f"line: telnet 127.0.0.1 {line}" in started
        from tests.test_ops import get

        assert await get(f"http://127.0.0.1:{web}/healthz") == (200, ANY, "ok\n")
    finally:
        process.terminate()
        process.wait(15)


def test_the_systemd_units_verify(tmp_path):
    """systemd-analyze checks the units' syntax and directives (ExecStart pointed at this
    environment's chatd, which must exist; the user at one that exists here)."""
    analyze = tool("systemd-analyze")
    chatd = Path(sys.executable).parent / "chatd"
    if not chatd.exists():
        pytest.skip("the chatd console script is not installed in this environment")
    service = (UNITS / "chatd.service").read_text()
    service = service.replace("/opt/chatd/bin/chatd", str(chatd))
    service = service.replace("User=chatd", "User=root").replace("Group=chatd", "Group=root")
    (tmp_path / "chatd.service").write_text(service)
    shutil.copy(UNITS / "chatd.socket", tmp_path / "chatd.socket")
    done = subprocess.run(
        [analyze, "verify", tmp_path / "chatd.socket", tmp_path / "chatd.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # An unknown key or a bad value is only a warning, exit code 0 nonetheless.
    assert "chatd." not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "index=0" in service and "index=4" in service
    assert (UNITS / "chatd.socket").read_text().count("ListenStream=") == 5
