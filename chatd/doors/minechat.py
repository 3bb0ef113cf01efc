"""minechat doors (issue 6): not written yet; these factories refuse connections."""

from __future__ import annotations

from twisted.internet.protocol import Factory

from chatd.room import Room


class MinechatReadFactory(Factory):
    def __init__(self, room: Room) -> None:
        self.room = room

    def buildProtocol(self, addr: object) -> None:
        return None


class MinechatWriteFactory(MinechatReadFactory):
    pass
