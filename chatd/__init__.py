"""chatd: one chat room for telnet, browsers, WebSocket and minechat clients, on Twisted."""

__version__ = "0.1.0"
