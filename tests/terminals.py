"""Programs in terminals: tmux sessions of the test's own, for driving real clients (Debian's
telnet, irssi) as a person types. Tests get them from the C{terminals} fixture, which ends
every session after the test."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import pause


def needs(*programs: str) -> None:
    """Skip on a machine without them (apt-get installs them); in CI, fail."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


class Terminals:
    """tmux sessions of our own (its server's socket in a temporary directory)."""

    def __init__(self, directory: str) -> None:
        self.tmux = shutil.which("tmux") or "tmux"
        self.env = {"PATH": os.environ.get("PATH", ""), "TERM": "xterm", "TMUX_TMPDIR": directory}

    async def run(self, *args: str) -> str:
        out, err, code = await getProcessOutputAndValue(
            self.tmux, ["-f", "/dev/null", *args], env=self.env, reactor=reactor
        )
        if code:
            raise AssertionError(f"tmux {' '.join(args)} failed: {err.decode(errors='replace')}")
        return out.decode("utf-8", "replace")

    async def open(self, name: str, command: str) -> None:
        await self.run("new-session", "-d", "-s", name, "-x", "120", "-y", "40", command,
                       ";", "set-option", "-g", "remain-on-exit", "on")  # fmt: skip

    async def type(self, name: str, text: str) -> None:
        await self.run("send-keys", "-t", name, "-l", text)
        await self.run("send-keys", "-t", name, "Enter")

    async def shows(self, name: str, pattern: str) -> re.Match[str]:
        """Wait until the screen has a line matching C{pattern}."""
        deadline = time.monotonic() + 10
        while True:
            screen = await self.run("capture-pane", "-p", "-J", "-t", name, "-S", "-200")
            if found := re.search(pattern, screen, re.M):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}'s screen never showed {pattern!r}:\n{screen}")
            await pause(0.1)

    async def close(self) -> None:
        try:
            await self.run("kill-server")
        except AssertionError:
            pass  # already gone
