"""Building the chatd service: the twistd plugin and chat.tac both call L{makeService}."""

from __future__ import annotations

import functools
import signal
import sys
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import clientFromString
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage

from chatd import config as configuration
from chatd import guestnames
from chatd.audit import AuditLog
from chatd.bus import Bus, LocalBus
from chatd.commands import discover
from chatd.config import Config, ConfigError
from chatd.doors import proxy
from chatd.doors.line import LineFactory
from chatd.doors.minechat import MinechatReadFactory, MinechatWriteFactory
from chatd.doors.web import make_site
from chatd.room import Room
from chatd.store import StoreError, open_store

# Settings that are also command-line options: the doors, the store, the cluster.
OPTION_SECTIONS = ("server", "storage", "cluster")


def _door_options() -> list[list[Any]]:
    return [
        [f.name.replace("_", "-"), None, None, f"{f.metadata['doc']} [default: {f.default}]"]
        for f in configuration.settings()
        if f.metadata["section"] in OPTION_SECTIONS
    ]


class Options(usage.Options):
    """C{twistd chatd} options; each door takes a Twisted endpoint string, or C{none}."""

    synopsis = "[--line ENDPOINT] [--web ENDPOINT] [--config FILE] [--data-dir DIR]"
    optParameters = [
        ["config", "c", None, "INI file with settings (see README); options given here win"],
        *_door_options(),
    ]
    longdesc = "Doors take Twisted endpoint strings such as tcp:6969:interface=127.0.0.1."

    def postOptions(self) -> None:
        overrides = {
            f.name: self[f.name.replace("_", "-")]
            for f in configuration.settings()
            if f.metadata["section"] in OPTION_SECTIONS
            and self[f.name.replace("_", "-")] is not None
        }
        try:
            self.config = configuration.load(self["config"], overrides)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


class ChatService(MultiService):
    """The Room and its doors; opens the audit log on start."""

    def __init__(self, room: Room, audit: AuditLog, factories: dict[str, Any]) -> None:
        super().__init__()
        self.room = room
        self.audit = audit
        self.factories = factories  # door name -> protocol factory (tests listen on port 0)
        room.bus.setServiceParent(self)  # starts before the Room and stops after it
        room.setServiceParent(self)

    def startService(self) -> None:
        self.audit.open()
        super().startService()

    def stopService(self) -> Any:
        d = super().stopService()
        self.audit.close()
        return d


def build(config: Config, reactor: Any = None) -> ChatService:
    """The whole server for C{config}: a Room with one service per door that is switched on.

    Opens the store (blocking: the reactor is not running yet); raises L{StoreError}.
    """
    if reactor is None:
        from twisted.internet import reactor  # the process's reactor, chosen by twistd
    guestnames.preload()
    audit = AuditLog(config.data_path / "chat_log.txt")
    store = open_store(config, reactor)
    in_thread = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    room = Room(
        config, reactor, discover(), store, in_thread, audit=audit, bus=_bus(config, reactor)
    )
    doors = {
        "line": LineFactory(room),
        "web": make_site(room),
        "minechat_read": MinechatReadFactory(room),
        "minechat_write": MinechatWriteFactory(room),
    }
    top = ChatService(room, audit, doors)
    for name, factory in doors.items():
        endpoint = getattr(config, name).strip()
        if endpoint.lower() != "none":
            spec = proxy.listen_spec(endpoint, factory, reactor, config.handshake_timeout)
            door = strports.service(*spec, reactor=reactor)
            door.setName(name)
            door.setServiceParent(top)
    return top


def _bus(config: Config, reactor: Any) -> Bus:
    """The Redis bus when C{redis_url} is set (a cluster), else this node alone."""
    if not config.redis_url:
        return LocalBus()
    try:
        from chatd.bus.redis import RedisBus
    except ImportError as e:
        raise ConfigError(
            f"redis_url is set, but the Redis client is missing ({e}); "
            "install it with: pip install 'chatd[cluster]'"
        ) from None
    target = configuration.redis_target(config.redis_url)
    return RedisBus(
        reactor,
        clientFromString(reactor, target.endpoint),
        config.redis_prefix,
        config.node or None,
        config.presence_ttl,
        max_pending=config.max_pending,
        backlog=config.backlog,
        username=target.username,
        password=target.password,
        db=target.db,
        where=target.where,
    )


def makeService(options: Options) -> IService:
    try:
        service = build(options.config)
    except (StoreError, ConfigError) as e:
        sys.exit(f"chatd cannot start: {e}")  # a clear line and exit code 1, no traceback
    from twisted.internet import reactor  # the process's reactor, chosen by twistd

    reactor.callWhenRunning(stop_signals_on_reactor_thread, reactor)
    return service


def stop_signals_on_reactor_thread(reactor: Any) -> None:
    """Run Twisted's SIGTERM and SIGINT handlers on the reactor thread, not in the signal.

    They log, and a signal landing while the main thread holds the log observer's lock
    deadlocks the process: it never stops (twisted/twisted#7736, seen once in CI here).
    Queued with C{callFromThread} (a list append and a pipe write, no lock) they run on the
    next reactor turn instead. Handlers someone else installed are left alone.
    """
    for number, handler in ((signal.SIGTERM, reactor.sigTerm), (signal.SIGINT, reactor.sigInt)):
        if signal.getsignal(number) == handler:
            signal.signal(number, lambda n, _, h=handler: reactor.callFromThread(h, n))
