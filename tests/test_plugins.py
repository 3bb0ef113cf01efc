"""Command plugins: a third-party distribution on sys.path adds a command through a REAL
entry point; broken plugins and name clashes are logged, and the server starts anyway."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from chatd.commands import discover
from tests.support import line_client, ws_client

MODULE = """
from chatd.commands import CommandError, UsageError, command

SIDES = {"d6": 6, "d20": 20}


@command("roll", aliases=("dice",), usage="<d6|d20>", help="roll a die for everyone to see")
def roll(ctx, args):
    if args not in SIDES:
        raise UsageError()
    ctx.announce(f"{ctx.name} rolled {args}: {SIDES[args]}")


@command("shout", help="the same name as another plugin's command")
def shout(ctx, args):
    ctx.reply("first shout")


@command("shout", help="a second command with one name")
def shout_again(ctx, args):
    ctx.reply("second shout")


@command("lst", aliases=("users",), help="wants an alias a built-in has")
def lst(ctx, args):
    ctx.reply("taken over!")


NOT_A_COMMAND = 42
"""

ENTRY_POINTS = """
[chatd.commands]
roll = thirdparty:roll
shout = thirdparty:shout
shout2 = thirdparty:shout_again
lst = thirdparty:lst
broken = thirdparty_missing:gone
bogus = thirdparty:NOT_A_COMMAND
"""


def install_thirdparty(path: Path, monkeypatch) -> None:
    """What `pip install thirdparty` leaves in site-packages: a module and its dist-info."""
    (path / "thirdparty.py").write_text(textwrap.dedent(MODULE))
    info = path / "thirdparty-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(path))


def test_broken_and_clashing_plugins_are_reported_and_skipped(tmp_path, monkeypatch):
    install_thirdparty(tmp_path, monkeypatch)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        registry = discover()
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = "\n".join(formatEvent(e) for e in events)
    assert "broken = thirdparty_missing:gone failed to load; skipped" in logged
    assert "bogus = thirdparty:NOT_A_COMMAND is a int, not a chatd.commands.Command" in logged
    assert "shout2 = thirdparty:shout_again wants /shout, which /shout already has" in logged
    assert "lst = thirdparty:lst wants /users, which /list already has; skipped" in logged
    assert registry.get("roll").name == registry.get("dice").name == "roll"
    assert registry.get("shout").help == "the same name as another plugin's command"
    assert registry.get("users").name == "list"
    assert registry.get("lst") is None and registry.get("broken") is None
    for builtin in ("help", "list", "whisper", "rename", "exit", "status"):
        assert registry.get(builtin) is not None


@pytest_twisted.ensureDeferred
async def test_a_thirdparty_command_works_for_users_on_every_door(serve, tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    install_thirdparty(tmp_path / "site", monkeypatch)
    server = await serve(data_dir=tmp_path / "data")
    telnet = await line_client(server.ports["line"])
    ws = await ws_client(server.ports["web"])
    telnet.send("/help roll")
    await telnet.expect(r"^\* /roll <d6\|d20>  \(also /dice\)$")
    await telnet.expect(r"^\*   roll a die for everyone to see$")
    telnet.send("/dice d20")
    name = telnet.lines[0].split()[-1]
    await ws.expect(rf"^\* {name} rolled d20: 20$")
    await telnet.expect(rf"^\* {name} rolled d20: 20$")
    ws.send("/roll d7")
    await ws.expect(r"^! usage: /roll <d6\|d20>$")
    ws.send("/users")  # the built-in kept its alias
    await ws.expect(r"^\* online \(2\): ")
    telnet.close()
    ws.close()
