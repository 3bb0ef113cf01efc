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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.processes import Process, free_port
from tests.support import pause

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


@pytest_twisted.async_yield_fixture
async def setup(
    tmp_path: Path,
    haproxy: str,
    node: Callable[..., Awaitable[Process]],
    process: Callable[..., Awaitable[Process]],
) -> AsyncIterator[dict[str, Any]]:
    """Two nodes behind HAProxy with docs/deploy.md's configuration; all stopped after."""
    ports = {
        name: free_port()
        for name in ("front_line", "front_web", "a_line", "a_web", "b_line", "b_web")
    }
    # Every probe comes from 127.0.0.1: no per-address flood limits in this test.
    ini = tmp_path / "chatd.ini"
    ini.write_text("[flood]\nnew_connections_per_minute = 0\nconnections_per_address = 0\n")
    nodes = {}
    for name in ("a", "b"):
        nodes[name] = await node(
            name, ports[name + "_line"], "--config", str(ini),
            "--line", f"haproxy:tcp:{ports[name + '_line']}:interface=127.0.0.1",
            "--web", f"haproxy:tcp:{ports[name + '_web']}:interface=127.0.0.1",
            "--minechat-read", "none", "--minechat-write", "none", "--irc", "none",
        )  # fmt: skip
    config = tmp_path / "haproxy.cfg"
    config.write_text(documented_config(ports))
    await process("haproxy", [haproxy, "-db", "-f", str(config)], ports["front_line"])
    yield {"ports": ports, "nodes": nodes}


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
    ports, nodes = setup["ports"], setup["nodes"]
    for _ in range(4):  # both nodes serve (leastconn takes turns while nobody stays)
        assert line_user(ports["front_line"]).startswith("* you are ")
    await pause(1.5)  # the first health checks are in

    nodes["a"].stop(signal.SIGKILL)  # its sockets are closed: a connection to it is refused now
    await pause(1.0)  # "within a second": a connection in that second may still be lost
    lines = [line_user(ports["front_line"]) for _ in range(10)]
    statuses = [web_status(ports["front_web"]) for _ in range(10)]
    assert all(line.startswith("* you are ") for line in lines), lines
    assert all(status.endswith(" 200 OK") for status in statuses), statuses
