"""Debian's irssi, in a terminal, in the same chat as a telnet user: #lobby and #dev."""

from __future__ import annotations

import shutil

import pytest_twisted

from tests.support import line_client
from tests.terminals import needs

# irssi queues what it sends 2.2 s apart after a burst (its flood protection), and it sends
# a few commands of its own on joining.
SLOW = 20.0


@pytest_twisted.ensureDeferred
async def test_irssi_joins_talks_both_ways_with_telnet_and_quits(serve, terminals, tmp_path):
    needs("irssi", "tmux")
    server = await serve(doors=("line", "irc"))
    home = tmp_path / "irssi"
    home.mkdir()
    irssi = f"{shutil.which('irssi')} --home={home} -n ann -c 127.0.0.1 -p {server.ports['irc']}"
    bob = await line_client(server.ports["line"])
    bob.send("/rename bob")
    await bob.expect(r"^\* you are bob$")
    await terminals.open("ann", irssi)
    await terminals.shows("ann", r"Welcome to chatd, ann")
    await bob.expect(r"^\* ann joined$", SLOW)
    await terminals.type("ann", "/window goto #lobby")
    await terminals.shows("ann", r"ann \[chat@chatd\] has joined #lobby")
    await terminals.type("ann", "hello from irssi")
    await bob.expect(r"^ann: hello from irssi$", SLOW)
    bob.send("hello irssi, telnet here")
    await terminals.shows("ann", r"< ?bob> hello irssi, telnet here")
    await terminals.type("ann", "/msg bob just between us")
    await bob.expect(r"^>> ann: just between us$", SLOW)
    bob.send("/whisper ann got it")
    await terminals.type("ann", "/window goto bob")
    await terminals.shows("ann", r"< ?bob> got it")
    # Another room: a channel of its own, talked in both ways.
    bob.send("/join #dev")
    await bob.expect(r"^\* you joined #dev")
    await terminals.type("ann", "/join #dev")
    await terminals.shows("ann", r"ann \[chat@chatd\] has joined #dev")
    await bob.expect(r"^\* ann joined$", SLOW)
    await terminals.type("ann", "hello dev from irssi")
    await bob.expect(r"^ann: hello dev from irssi$", SLOW)
    bob.send("dev here, telnet")
    await terminals.shows("ann", r"< ?bob> dev here, telnet")
    await terminals.type("ann", "/quit see you")
    await bob.expect(r"^(\[#lobby\] )?\* ann left$", SLOW)
