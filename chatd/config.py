"""Settings: defaults, overridden by an INI file, overridden by the command line.

One dataclass describes every setting once; the INI section of each field is kept in its
metadata, so the file format, the defaults table in the README and the command-line options
all come from this single place.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


def _setting(section: str, default: Any, doc: str, key: str | None = None) -> Any:
    """A setting; C{key} names it in the INI file when the field name would repeat the section."""
    return field(default=default, metadata={"section": section, "doc": doc, "key": key})


def ini_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


# Pending connections the kernel keeps for each door until chatd accepts them: after a
# restart every client reconnects at once, and past Twisted's default of 50 the rest would
# wait for SYN retries (1 s, 3 s, 7 s...). Linux caps it at net.core.somaxconn (4096).
BACKLOG = 4096


@dataclass(frozen=True)
class Config:
    # [server] doors, as Twisted endpoint strings; "none" switches a door off.
    line: str = _setting(
        "server", f"tcp:6969:interface=127.0.0.1:backlog={BACKLOG}", "line door (telnet)"
    )
    web: str = _setting(
        "server", f"tcp:8080:interface=127.0.0.1:backlog={BACKLOG}", "web page and WebSocket door"
    )
    minechat_read: str = _setting(
        "server",
        f"tcp:5000:interface=127.0.0.1:backlog={BACKLOG}",
        "minechat read-only stream door",
    )
    minechat_write: str = _setting(
        "server",
        f"tcp:5050:interface=127.0.0.1:backlog={BACKLOG}",
        "minechat token-login write door",
    )
    irc: str = _setting(
        "server",
        f"tcp:6667:interface=127.0.0.1:backlog={BACKLOG}",
        "IRC door (irssi, WeeChat, HexChat); ssl:6697:... for TLS",
    )
    metrics: str = _setting(
        "server", "none", "/metrics and /healthz for operators, e.g. tcp:9102:interface=127.0.0.1"
    )
    data_dir: str = _setting("server", "chatd-data", "database and audit log folder")

    # [limits] protect the server from one client.
    max_line_bytes: int = _setting("limits", 4096, "longest line a client may send")
    max_message_bytes: int = _setting(
        "limits", 4096, "longest chat message, in UTF-8 bytes, on every door; 0: no limit"
    )
    max_ws_message_bytes: int = _setting(
        "limits", 65536, "largest WebSocket message (1009 past it)"
    )
    max_output_bytes: int = _setting(
        "limits", 1048576, "output queued for a client that stops reading before it is dropped"
    )
    handshake_timeout: float = _setting(
        "limits", 10.0, "seconds a WebSocket/HTTP client may take to finish its handshake"
    )
    max_name_length: int = _setting("limits", 24, "longest user name")
    health_timeout: float = _setting(
        "limits", 2.0, "seconds the database (and Redis) have to answer /healthz"
    )

    # [flood] per connection and per address; 0 switches a rule off.
    lines_per_second: float = _setting("flood", 20.0, "input lines per second per connection")
    connections_per_address: int = _setting("flood", 20, "concurrent connections from one address")
    new_connections_per_minute: int = _setting(
        "flood", 60, "new connections from one address per minute"
    )

    # [moderation]
    messages_per_hour: int = _setting(
        "moderation", 20, "messages a user may send per period; 0 switches the limit off"
    )
    rate_period: float = _setting("moderation", 3600.0, "length of the rate-limit period, seconds")
    renames_per_hour: int = _setting(
        "moderation", 10, "name changes a user may make per period; 0 switches the limit off"
    )
    reports_to_mute: int = _setting("moderation", 3, "reports from different users that mute")
    mute_seconds: float = _setting("moderation", 600.0, "how long a mute lasts")

    # [accounts]
    login_required: bool = _setting("accounts", False, "guests must log in before speaking")
    min_password_length: int = _setting("accounts", 8, "shortest accepted password")
    accounts_per_address_per_hour: int = _setting(
        "accounts", 3, "accounts one address may create per hour; 0: no limit"
    )

    # [history]
    history_ttl: float = _setting("history", 3600.0, "seconds a public message is kept")
    history_default: int = _setting("history", 20, "messages /history shows by default")
    catch_up: int = _setting("history", 20, "missed messages sent on login, at most")

    # [rooms]
    default_room: str = _setting(
        "rooms", "#lobby", "the room everyone is in from connecting on (IRC: this channel)"
    )
    max_rooms_per_person: int = _setting("rooms", 20, "rooms one person may be in at once")
    max_rooms: int = _setting("rooms", 1000, "rooms on the server at once")
    max_room_members: int = _setting(
        "rooms", 500, "people in one room (the default room holds everyone)"
    )
    max_room_name_length: int = _setting("rooms", 32, "longest room name, with its #")
    kick_minutes: int = _setting("rooms", 10, "minutes /kick keeps someone out by default")
    crowd_size: int = _setting(
        "rooms", 200, "past this many people in a room, arrivals and departures are summed up"
    )
    crowd_summary: float = _setting(
        "rooms", 5.0, "seconds between a crowded room's 'N joined, M left' lines (0: none)"
    )

    # [exchange]
    exchange_url: str = _setting(
        "exchange",
        "https://api.privatbank.ua/p24api/exchange_rates",
        "PrivatBank archive API (or a mirror)",
    )
    exchange_broadcast: bool = _setting(
        "exchange", True, "also show exchange tables to everyone else"
    )
    exchange_timeout: float = _setting("exchange", 10.0, "seconds to wait for one API answer")
    exchange_concurrency: int = _setting("exchange", 4, "API requests in flight at once")

    # [web]
    allowed_origins: str = _setting(
        "web", "", "space-separated WebSocket origins allowed besides the page's own; * for any"
    )

    # [storage] / [cluster]
    storage_url: str = _setting(
        "storage", "", "empty for SQLite in the data dir, or postgresql://user@host/db", key="url"
    )
    storage_timeout: float = _setting(
        "storage",
        5.0,
        "seconds a PostgreSQL query may take before the user is told it failed",
        key="timeout",
    )
    redis_url: str = _setting(
        "cluster",
        "",
        "redis[s]://[[user]:password@]host[:port][/db] to join a cluster; empty for one node",
    )
    redis_prefix: str = _setting(
        "cluster", "chatd", "Redis key prefix; nodes of one room share it, other rooms differ"
    )
    node: str = _setting("cluster", "", "this node's name in Redis (unique); empty: a random one")
    presence_ttl: float = _setting(
        "cluster", 30.0, "seconds until a node that stopped answering leaves everyone's /list"
    )
    max_pending: int = _setting(
        "cluster", 2000, "events a node keeps for the others while Redis is unreachable (newest)"
    )
    backlog: int = _setting(
        "cluster", 10000, "events Redis keeps for a node that lost it (a longer outage is a gap)"
    )

    # Sections the built-in fields do not use, kept for third-party command plugins.
    extra: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# The settings that are Twisted endpoint strings (or "none").
DOORS = ("line", "web", "minechat_read", "minechat_write", "irc")
ENDPOINTS = (*DOORS, "metrics")


def needs_restart(name: str) -> bool:
    """Whether a change of this setting takes a restart; the others apply on SIGHUP.

    Listening ports, the data dir, the database and the cluster are opened once; the
    handshake timeout is built into the doors' wrappers; the default room holds everyone
    connected.
    """
    section = next(f.metadata["section"] for f in settings() if f.name == name)
    return section in ("server", "storage", "cluster") or name in (
        "handshake_timeout",
        "default_room",
    )


def settings() -> list[dataclasses.Field]:
    """Every user-facing setting, in declaration order."""
    return [f for f in fields(Config) if "section" in f.metadata]


def _convert(f: dataclasses.Field, raw: str, where: str) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"int": int, "float": float, "bool": bool}.get(f.type, str)
    )
    text = raw.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "yes", "true", "on"):
                return True
            if lowered in ("0", "no", "false", "off"):
                return False
            raise ValueError(text)
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a valid {kind.__name__}") from None
    if kind in (int, float) and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {text}")
    if f.name in ENDPOINTS and text.lower() != "none":
        _check_endpoint(text, where)
    if f.name == "redis_url" and text:
        redis_target(text, where)
    if f.name in ("storage_timeout", "backlog") and value == 0:
        raise ConfigError(f"{where}: must be more than 0, got {text}")
    if f.name == "presence_ttl" and value < 1:
        raise ConfigError(f"{where}: must be at least 1 second, got {text}")
    if f.name == "node" and (" " in text or not text.isprintable()):
        raise ConfigError(f"{where}: a node name has no spaces, got {text!r}")
    if f.name == "default_room" and not re.match(r"#[^\W_][\w.-]*\Z", text):
        raise ConfigError(f"{where}: a room name is # and letters or digits, got {text!r}")
    return value


class RedisTarget(NamedTuple):
    """Where a C{redis_url} points, and how to log in there."""

    endpoint: str  # a Twisted client endpoint string
    username: str | None  # an ACL user (Redis 6+); None: the default user
    password: str | None  # None: no AUTH
    db: int  # the database number, SELECTed on every connection
    where: str  # the URL without its password, for log lines


def redis_target(url: str, where: str = "redis_url") -> RedisTarget:
    """Parse C{redis[s]://[[user]:password@]host[:port][/db]}. C{rediss://} is TLS, the
    server's certificate checked against the system's authorities, or with C{?ca=DIR}
    against the C{.pem} certificates in that directory."""
    parts = urlsplit(url.strip())
    kinds = {"redis": "tcp", "rediss": "tls"}
    try:
        port = parts.port or 6379
    except ValueError:
        port = None
    usage = "redis://[[user]:password@]host[:port][/db] (or rediss:// for TLS)"
    if parts.scheme not in kinds or not parts.hostname or port is None:
        raise ConfigError(f"{where}: {_hidden(parts)} is not {usage}")
    db = parts.path.strip("/") or "0"
    if not db.isdigit() or parts.fragment:
        raise ConfigError(f"{where}: {_hidden(parts)}: the path is a database number; {usage}")
    options = parse_qs(parts.query, keep_blank_values=True)
    if set(options) - {"ca"} or (options and parts.scheme != "rediss"):
        raise ConfigError(f"{where}: {_hidden(parts)}: the only option is ?ca=DIR, for rediss://")
    if parts.username and parts.password is None:
        raise ConfigError(f"{where}: {_hidden(parts)} names a user without a password; {usage}")
    host = parts.hostname.replace(":", "\\:")  # an IPv6 address, escaped for the endpoint
    # A host that does not answer at all: the next try, rather than 30 s of waiting.
    endpoint = f"{kinds[parts.scheme]}:host={host}:port={port}:timeout=5"
    if options:
        ca = options["ca"][-1]
        if not Path(ca).is_dir():
            raise ConfigError(f"{where}: ?ca={ca} is not a directory (of .pem certificates)")
        endpoint += ":trustRoots=" + ca.replace("\\", "\\\\").replace(":", "\\:")
    return RedisTarget(
        endpoint,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password is not None else None,
        int(db),
        _hidden(parts).strip("'"),
    )


def _hidden(parts: SplitResult) -> str:
    """The URL without its password, for error messages and logs."""
    if parts.password is None:
        return repr(parts.geturl())
    netloc = parts.netloc.rpartition("@")[2]
    return repr(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}").geturl())


def _check_endpoint(text: str, where: str) -> None:
    """Parse a door's endpoint now, so a typo is a usage error and not a start-up traceback.

    Parsing builds an endpoint object without listening; no reactor is needed for that.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, text)
    except (IndexError, KeyError):
        if not text.startswith("systemd:"):
            raise
        raise ConfigError(
            f"{where}: {text!r}: systemd passed no such socket; start chatd through "
            "its .socket unit (docs/operations.md), or give a tcp: endpoint"
        ) from None
    except Exception as e:
        raise ConfigError(
            f"{where}: {text!r} is not a Twisted endpoint ({e}); "
            "try tcp:6969:interface=127.0.0.1, or none to switch the door off"
        ) from None


# Seed 001's config.ini names its servers by host and port; chatd reads them as two doors.
_SEED_SECTIONS = {"tcp_server": "line", "ws_server": "web"}


def _seed_endpoint(section: configparser.SectionProxy, where: str) -> str:
    unknown = sorted(set(section) - {"host", "port"})
    if unknown:
        raise ConfigError(f"{where} has no setting {unknown[0]!r}; known: host, port")
    if "port" not in section:
        raise ConfigError(f"{where} needs a port")
    host = section.get("host", "127.0.0.1").strip()
    return f"tcp:{section['port'].strip()}:interface={host}:backlog={BACKLOG}"


def load(path: str | None = None, overrides: dict[str, str] | None = None) -> Config:
    """Build a Config from an INI file (optional) and string overrides such as CLI options."""
    by_key = {(f.metadata["section"], ini_key(f)): f for f in settings()}
    values: dict[str, Any] = {}
    extra: dict[str, dict[str, str]] = {}
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except (configparser.Error, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not a valid INI file: {e}") from None
        known_sections = {section for section, _ in by_key}
        for section in parser.sections():
            if section in _SEED_SECTIONS:
                door = _SEED_SECTIONS[section]
                if parser.has_option("server", door):
                    raise ConfigError(
                        f"{path}: [{section}] and [server] {door} both set the {door} door; "
                        "keep one"
                    )
                endpoint = _seed_endpoint(parser[section], f"{path}: [{section}]")
                values[door] = _convert(by_key["server", door], endpoint, f"{path}: [{section}]")
                continue
            if section not in known_sections:
                close = difflib.get_close_matches(section, known_sections, n=1, cutoff=0.8)
                if close:
                    raise ConfigError(f"{path}: no section [{section}]; did you mean [{close[0]}]?")
                extra[section] = dict(parser[section])  # for a command plugin
                continue
            for key, raw in parser[section].items():
                f = by_key.get((section, key))
                if f is None:
                    names = ", ".join(sorted(k for s, k in by_key if s == section))
                    raise ConfigError(f"{path}: [{section}] has no setting {key!r}; known: {names}")
                values[f.name] = _convert(f, raw, f"{path}: [{section}] {key}")
    for name, raw in (overrides or {}).items():
        f = next((f for f in settings() if f.name == name), None)
        if f is None:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _convert(f, raw, f"--{name.replace('_', '-')}")
    config = Config(**values, extra=extra)
    if config.redis_url and not config.storage_url:
        raise ConfigError(
            "redis_url joins a cluster, and its nodes must share one database: set [storage] "
            "url (or --storage-url) to postgresql://...; SQLite serves one node"
        )
    return config


def example_ini() -> str:
    """The whole configuration with defaults, as an INI file (used by the README)."""
    out: list[str] = []
    section = None
    for f in settings():
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            out.append(f"\n[{section}]")
        default = f.default
        if isinstance(default, bool):
            default = "true" if default else "false"
        out.append(f"# {f.metadata['doc']}")
        out.append(f"{ini_key(f)} = {default}")
    return "\n".join(out).lstrip() + "\n"
