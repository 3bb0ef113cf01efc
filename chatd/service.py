"""Building the chatd service: the twistd plugin and chat.tac both call L{makeService}."""

from __future__ import annotations

import functools
import gc
import signal
import sys
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from chatd import config as configuration
from chatd import guestnames, metrics
from chatd.audit import AuditLog
from chatd.bus import Bus
from chatd.commands import discover, exchange
from chatd.config import Config, ConfigError
from chatd.doors import proxy
from chatd.doors.irc import IRCFactory
from chatd.doors.line import LineFactory
from chatd.doors.minechat import MinechatReadFactory, MinechatWriteFactory
from chatd.doors.ops import HealthResource, make_ops_site
from chatd.doors.web import make_site
from chatd.health import Health
from chatd.room import Room
from chatd.store import StoreError, open_store

log = Logger(namespace="chatd.service")

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
    longdesc = (
        "Doors take Twisted endpoint strings such as tcp:6969:interface=127.0.0.1. "
        "SIGHUP reloads the settings that can change while running (see docs/operations.md)."
    )

    def postOptions(self) -> None:
        self.overrides = {
            f.name: self[f.name.replace("_", "-")]
            for f in configuration.settings()
            if f.metadata["section"] in OPTION_SECTIONS
            and self[f.name.replace("_", "-")] is not None
        }
        try:
            self.config = self.load()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def load(self) -> Config:
        """The settings from the same file and options again (a reload reads the file anew)."""
        return configuration.load(self["config"], self.overrides)


class CannotListen(Exception):
    """A door's endpoint cannot be listened on; the message names the door and why."""


class Door(Service):
    """One door listening on its endpoint; the log says how to reach it.

    Unlike C{strports.service}, a failure to listen is one line naming the door, not a
    traceback from inside twistd. Started, it holds its port without accepting: those who
    connect wait in the backlog until L{open} (the server knows its rooms then).
    """

    def __init__(self, name: str, spec: str, endpoint: Any, factory: Any) -> None:
        self.setName(name)
        self.spec = spec
        self.endpoint = endpoint
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        # TCP, UNIX, TLS and systemd endpoints listen at once; the Deferred has fired.
        if not outcome or isinstance(outcome[0], Failure):
            why = outcome[0].getErrorMessage() if outcome else "it did not listen at once"
            raise CannotListen(f"the {self.name} door cannot listen on {self.spec}: {why}")
        super().startService()
        self.port = outcome[0]
        self.port.stopReading()  # a listening port is a FileDescriptor: accept nobody yet

    def open(self) -> None:
        """Accept connections (those waiting in the backlog first)."""
        if self.port is not None:
            self.port.startReading()
            log.info("{door}: {how}", door=self.name, how=reach(self.name, self.spec, self.port))

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def reach(door: str, spec: str, port: Any) -> str:
    """How a user reaches C{door}, from the address it listens on."""
    address = port.getHost()
    host, number = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:  # a Unix socket
        return f"listening on {getattr(address, 'name', address)!r} ({spec})"
    if ":" in host:
        host = f"[{host}]"
    tls = spec.split(":", 1)[0] in ("ssl", "tls")
    behind = " (behind HAProxy: expects the PROXY header)" if spec.startswith("haproxy:") else ""
    s = "s" if tls else ""
    how = {
        "line": f"telnet {host} {number}",
        "web": f"http{s}://{host}:{number}/ (page), ws{s}://{host}:{number}/ws (WebSocket)",
        "minechat_read": f"minechat read stream at {host}:{number} (nc {host} {number})",
        "minechat_write": f"minechat write door at {host}:{number} (nc {host} {number})",
        "metrics": f"http{s}://{host}:{number}/metrics and /healthz",
        "irc": f"irc{s}://{host}:{number}/ (irssi: /connect {'-tls ' * tls}{host} {number})",
    }
    return how.get(door, f"{host}:{number}") + behind


class ChatService(MultiService):
    """The Room and its doors; opens the audit log on start.

    @ivar registry: this service's Prometheus metrics (a registry of its own: several
        services may share a process).
    """

    def __init__(
        self,
        room: Room,
        audit: AuditLog,
        factories: dict[str, Any],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__()
        self.room = room
        self.audit = audit
        self.factories = factories  # door name -> protocol factory (tests listen on port 0)
        self.registry = registry
        if room.bus is not None:
            room.bus.setServiceParent(self)  # starts before the Room and stops after it
        room.setServiceParent(self)

    def startService(self) -> Deferred[None]:
        """Listen on every door first: a port in use stops the start before anything else
        (the database's worker thread, the bus) has started, with one line saying which.

        The doors accept connections only once the Room has read the rooms kept in the
        store (or could not: it logs what is missing), so nobody joins a kept room before
        its owner, kicks and invitations are known. Returns a Deferred that fires then
        (twistd ignores it; a test awaits it).
        """
        doors = [child for child in self if isinstance(child, Door)]
        try:
            for door in doors:
                door.startService()
        except CannotListen as e:
            for door in doors:
                if door.running:
                    door.stopService()
            raise SystemExit(f"chatd cannot start: {e}") from None  # one line, exit code 1
        self.audit.open()
        Service.startService(self)
        for child in self:
            if not child.running:
                child.startService()
        return self.room.rooms.loaded().addCallback(lambda _: _open(doors))

    def stopService(self) -> Any:
        d = super().stopService()
        self.audit.close()
        return d

    def reload(self, new: Config) -> tuple[list[str], list[str]]:
        """Apply the settings that can change while running; reopen the audit log.

        Returns the names of the settings applied and of those that need a restart (they
        keep their old values until then); the log says both.
        """
        old = self.room.config
        changed = [
            f.name for f in configuration.settings() if getattr(old, f.name) != getattr(new, f.name)
        ]
        later = [name for name in changed if configuration.needs_restart(name)]
        applied = [name for name in changed if name not in later]
        config = new.replace(**{name: getattr(old, name) for name in later})
        self.room.reconfigure(config)
        web = self.factories.get("web")
        if web is not None:
            web.reconfigure(config)
        if {"exchange_url", "exchange_timeout", "exchange_concurrency"} & set(applied):
            exchange.client_for(self.room.services).reconfigure(
                config.exchange_url, config.exchange_timeout, config.exchange_concurrency
            )
        self.audit.reopen()
        log.info(
            "reloaded the configuration: {applied}; the audit log was reopened",
            applied=_changes(old, config, applied) if applied else "no setting changed",
        )
        if later:
            log.warn("not applied until a restart: {later}", later=_changes(old, new, later))
        return applied, later


def _open(doors: list[Door]) -> None:
    for door in doors:
        door.open()


def _changes(old: Config, new: Config, names: list[str]) -> str:
    return ", ".join(f"{name} {getattr(old, name)!r} -> {getattr(new, name)!r}" for name in names)


def build(
    config: Config, reactor: Any = None, registry: CollectorRegistry | None = None
) -> ChatService:
    """The whole server for C{config}: a Room with one service per door that is switched on.

    Opens the store (blocking: the reactor is not running yet); raises L{StoreError}.
    The metrics go to C{registry}, a new one by default.
    """
    if reactor is None:
        from twisted.internet import reactor  # the process's reactor, chosen by twistd
    guestnames.preload()
    audit = AuditLog(config.data_path / "chat_log.txt")
    store = open_store(config, reactor)
    in_thread = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    bus = _bus(config, reactor)
    room = Room(config, reactor, discover(), store, in_thread, audit=audit, bus=bus)
    parts = {"database": store.ping}
    if config.redis_url:
        parts["redis"] = bus.ping
    health = Health(reactor, parts, lambda: room.config.health_timeout)
    site = make_site(room, HealthResource(health, public=True))
    doors = {
        "line": LineFactory(room),
        "web": site,
        "minechat_read": MinechatReadFactory(room),
        "minechat_write": MinechatWriteFactory(room),
        "irc": IRCFactory(room),
    }
    registry = registry if registry is not None else CollectorRegistry()
    metrics.registry_for(
        room,
        {
            "line": doors["line"].turn,
            "web": site.chat.turn,
            "minechat_read": doors["minechat_read"].turn,
            "irc": doors["irc"].turn,
        },
        registry,
    )
    doors["metrics"] = make_ops_site(registry, health)
    top = ChatService(room, audit, doors, registry)
    for name, factory in doors.items():
        spec = getattr(config, name).strip()
        if spec.lower() != "none":
            inner, wrapped = proxy.listen_spec(spec, factory, reactor, config.handshake_timeout)
            endpoint = serverFromString(reactor, with_backlog(inner))
            Door(name, spec, endpoint, wrapped).setServiceParent(top)
    return top


def with_backlog(spec: str) -> str:
    """C{spec} with chatd's listen backlog (L{configuration.BACKLOG}) when it is a TCP or
    TLS endpoint that does not name one: Twisted's own default of 50 would make a reconnect
    storm wait for SYN retries, whatever endpoint string an operator typed."""
    kind = spec.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6", "ssl") or "backlog=" in spec:
        return spec
    return f"{spec}:backlog={configuration.BACKLOG}"


def _bus(config: Config, reactor: Any) -> Bus | None:
    """The Redis bus when C{redis_url} is set (a cluster); None for a node alone."""
    if not config.redis_url:
        return None
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
    reactor.callWhenRunning(reload_on_sighup, reactor, service, options.load)
    reactor.callWhenRunning(freeze_start_up)
    return service


def freeze_start_up() -> None:
    """Leave what start-up made (modules, name tables, the Room) out of every later
    collection of the garbage collector.

    A full collection walks every tracked object, and chatd's start-up alone is some
    60,000 of them (about 50 ms on a busy 2-core machine): a pause that every recipient of
    the messages in flight waits for, seen as the WebSocket door's p99 latency. They live as
    long as the process anyway; frozen, they are never walked again. Only for a chatd
    process (twistd, chat.tac, python -m chatd), not for a test that builds the service.
    """
    gc.collect()
    gc.freeze()


def reload_on_sighup(reactor: Any, service: ChatService, load: Callable[[], Config]) -> None:
    """SIGHUP reads the configuration again and applies it (L{ChatService.reload}).

    As with L{stop_signals_on_reactor_thread}, the handler only queues the work for the
    reactor thread. A file that no longer parses is reported and changes nothing.
    """

    def reload() -> None:
        try:
            config = load()
        except ConfigError as e:
            log.error("SIGHUP: the configuration was not reloaded: {why}", why=str(e))
            return
        try:
            service.reload(config)
        except Exception:
            log.failure("SIGHUP: reloading the configuration failed")

    signal.signal(signal.SIGHUP, lambda number, frame: reactor.callFromThread(reload))


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
