"""A telnet user and a WebSocket user see each other and talk."""

import pytest_twisted

from tests.support import line_client, ws_client


@pytest_twisted.ensureDeferred
async def test_telnet_and_websocket_users_talk(server):
    telnet = await line_client(server.ports["line"])
    ws = await ws_client(server.ports["web"])
    ws_name = (await ws.expect(r"^\* you are ")).split()[-1]
    await telnet.expect(rf"^\* {ws_name} joined")
    telnet.send("hello from telnet")
    telnet_name = telnet.lines[0].split()[-1]
    await ws.expect(rf"^{telnet_name}: hello from telnet$")
    ws.send(f"/w {telnet_name} psst")
    await telnet.expect(rf"^>> {ws_name}: psst$")
    ws.close()
    await telnet.expect(rf"^\* {ws_name} left")
    telnet.close()
