"""The HAProxy configuration of docs/deploy.md, run for real in front of two chatd nodes:
once a node is killed, new connections land on the other one, none sent to the dead node.

Needs haproxy (apt-get install haproxy): skipped without it on a dev machine, fails in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.test_cluster import TWISTD, free_port, pause

DOC = Path(__file__).parent.parent / "docs" / "deploy.md"
NODES = {"10.0.0.11": "a", "10.0.0.12": "b"}  # the doc's addresses, and our node names


def documented_config(ports: dict[str, int]) -> str:
    """docs/deploy.md's haproxy.cfg, its addresses and ports replaced by the test's."""
    text = DOC.read_text()
    config = re.search(r"```haproxy\n(.*?)```", text, re.S)
    assert config is not None, "docs/deploy.md has no haproxy block"
    lines = []
    for line in config.group(1).splitlines():
        line = line.replace("bind :6969", f"bind 127.0.0.1:{ports['front_line']}")
        line = line.replace("bind :80", f"bind 127.0.0.1:{ports['front_web']}")
        for address, node in NODES.items():
            if address in line:
                line = line.replace(f"{address}:7001", f"127.0.0.1:{ports[node + '_line']}")
                line = line.replace(f"{address}:7080", f"127.0.0.1:{ports[node + '_web']}")
                line = line.replace("port 7080", f"port {ports[node + '_web']}")
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture
def haproxy() -> str:
    path = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if path is None:
        why = "haproxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI is set")
        pytest.skip(why)
    return path


async def listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"{what} exited") from None
            await pause(0.05)
    raise AssertionError(f"{what} did not start listening on {port}")


@pytest_twisted.async_yield_fixture
async def setup(tmp_path: Path, haproxy: str) -> AsyncIterator[dict[str, Any]]:
    ports = {
        name: free_port()
        for name in ("front_line", "front_web", "a_line", "a_web", "b_line", "b_web")
    }
    # Every probe comes from 127.0.0.1: no per-address flood limits in this test.
    ini = tmp_path / "chatd.ini"
    ini.write_text("[flood]\nnew_connections_per_minute = 0\nconnections_per_address = 0\n")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for node in ("a", "b"):
            (tmp_path / node).mkdir()
            processes[node] = subprocess.Popen(
                [*TWISTD, "-n", "--pidfile=", "--logfile", str(tmp_path / f"{node}.log"),
                 "chatd", "--config", str(ini), "--data-dir", str(tmp_path / node),
                 "--line", f"haproxy:tcp:{ports[node + '_line']}:interface=127.0.0.1",
                 "--web", f"haproxy:tcp:{ports[node + '_web']}:interface=127.0.0.1",
                 "--minechat-read", "none", "--minechat-write", "none", "--irc", "none"],
            )  # fmt: skip
        for node in ("a", "b"):
            await listening(ports[node + "_line"], processes[node], f"node {node}")
        config = tmp_path / "haproxy.cfg"
        config.write_text(documented_config(ports))
        processes["haproxy"] = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "haproxy.log", "wb"),  # noqa: SIM115 - closed with it
        )
        await listening(ports["front_line"], processes["haproxy"], "haproxy")
        yield {"ports": ports, "processes": processes, "log": tmp_path / "haproxy.log"}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(20)


def line_user(port: int) -> str:
    """Connect through HAProxy's line frontend; the first line the node sends, or ''."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)
            return s.recv(200).decode("utf-8", "replace").splitlines()[0]
    except (OSError, IndexError):
        return ""


def web_status(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n")
            return s.recv(200).decode("latin-1").split("\r\n", 1)[0]
    except OSError as e:
        return repr(e)


@pytest_twisted.ensureDeferred
async def test_new_connections_go_to_the_live_node_once_one_is_killed(setup):
    ports, processes = setup["ports"], setup["processes"]
    for _ in range(4):  # both nodes serve (leastconn takes turns while nobody stays)
        assert line_user(ports["front_line"]).startswith("* you are ")
    await pause(1.5)  # the first health checks are in

    processes["a"].send_signal(signal.SIGKILL)
    processes["a"].wait()  # its sockets are closed: a connection to it is refused now
    await pause(1.0)  # "within a second": a connection in that second may still be lost
    lines = [line_user(ports["front_line"]) for _ in range(10)]
    statuses = [web_status(ports["front_web"]) for _ in range(10)]
    assert all(line.startswith("* you are ") for line in lines), lines
    assert all(status.endswith(" 200 OK") for status in statuses), statuses
