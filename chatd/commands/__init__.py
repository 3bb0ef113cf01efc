"""Chat commands are plugins: entry points in the group C{chatd.commands}.

A command is a function decorated with L{command}; a package declares it in its metadata::

    [options.entry_points]
    chatd.commands =
        roll = mypackage.dice:roll

chatd's own commands are registered exactly the same way (see setup.cfg), so there is one
path for all of them. A plugin that fails to load is logged and skipped; two that claim one
name are reported and the first (chatd's own before third-party ones) is kept.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.config import Config
from chatd.errors import CommandError, UsageError
from chatd.events import Event, Message

__all__ = [
    "Command",
    "CommandError",
    "Context",
    "Elsewhere",
    "Registry",
    "RoomInfo",
    "Services",
    "Status",
    "UsageError",
    "command",
    "discover",
]

GROUP = "chatd.commands"
log = Logger(namespace="chatd.commands")


class Cache(Protocol):
    """A persistent key/value cache (the store's), for what a plugin fetched."""

    def cache_get(self, key: str) -> defer.Deferred[str | None]: ...

    def cache_put(self, key: str, value: str) -> defer.Deferred[None]: ...


@dataclass
class Services:
    """What every command of one server shares, and what C{setup} is given.

    @ivar state: a place for plugins to keep per-server objects (an HTTP client, say),
        under a key of their own.
    """

    clock: IReactorTime
    config: Config
    cache: Cache
    commands: Registry
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    """A snapshot of the chat and of the caller, for C{/status}.

    @ivar here: people on this server, when there are others elsewhere (a cluster).
    @ivar devices: the caller's sessions: (door, address, seconds connected, this one?).
    @ivar standing: the caller's limits as lines (messages left, a mute).
    """

    online: int
    here: int | None
    connections: int
    messages: int
    uptime: float
    name: str
    account: str | None
    since: float
    devices: list[tuple[str, str, float, bool]]
    standing: list[str]
    scheduled: list[Any]


@dataclass
class Elsewhere:
    """The caller's account on the other nodes of a cluster, for C{/status}.

    @ivar devices: its sessions there: (node, door, address, seconds connected).
    @ivar silent: the nodes where it is logged in that did not answer in time.
    """

    devices: list[tuple[str, str, str, float]]
    silent: list[str]


@dataclass(frozen=True)
class RoomInfo:
    """One room as C{/rooms} lists it.

    @ivar joined: the caller is in it; @ivar current: it is where the caller types.
    """

    name: str
    members: int
    topic: str
    owner: str | None
    invite_only: bool
    joined: bool
    current: bool


class Context(Protocol):
    """What a running command may do: everything a command reaches goes through here, for
    chatd's own commands as for any plugin.

    Methods that act for the caller (say, whisper, rename, report, the account ones) pass
    the same checks as typing would (limits, mutes, names) and raise L{CommandError} with
    the reason, which the user is shown.
    """

    invoked_as: str  # the word the user typed (an alias, maybe)

    @property
    def name(self) -> str:
        """The caller's name now."""

    @property
    def account(self) -> str | None:
        """The caller's account, or None for a guest."""

    @property
    def services(self) -> Services: ...

    def reply(self, text: str) -> None:
        """A notice to the caller's connection only."""

    def error(self, text: str) -> None:
        """An error line to the caller's connection only."""

    def show(self, event: Event) -> None:
        """Deliver an event (a member list, history) to the caller's connection."""

    def announce(self, text: str, others_only: bool = False) -> None:
        """A notice to everyone (on every node), or to everyone but the caller."""

    def find(self, name: str) -> str | None:
        """The person called C{name} (any case) wherever they are: online on any node, or
        an account that is offline; their own spelling, or None if there is nobody."""

    def say(self, text: str) -> None:
        """A public message from the caller."""

    def whisper(self, to: str, text: str) -> None:
        """A private message from the caller (kept for an offline account)."""

    def rename(self, new: str) -> None: ...

    def report(self, name: str) -> None:
        """Complain about C{name}; the caller (or, on a mute, everyone) is told."""

    def online(self) -> defer.Deferred[list[str]]:
        """Everyone online, on every node, sorted. When the other nodes do not answer at
        once, the last known list, and the caller is told it may be out of date."""

    def history(self, limit: int) -> defer.Deferred[list[Message]]:
        """The last C{limit} public messages of the caller's current room, oldest first."""

    @property
    def room(self) -> str:
        """The caller's current room: where what they type goes."""

    def join(self, name: str) -> None:
        """Join the room C{name} (made if new) and make it current; in it already: make it
        current. Raises L{CommandError} (a bad name, a kick, invite-only, a limit)."""

    def part(self, name: str | None) -> None:
        """Leave the room C{name}, or the current one."""

    def rooms(self) -> list[RoomInfo]:
        """Every room, by name."""

    def topic(self, name: str | None) -> str:
        """The topic of the room C{name} (or the current one); empty when it has none."""

    def set_topic(self, text: str) -> None:
        """Set the current room's topic (its owner; anyone in a room without one)."""

    def who(self, name: str | None) -> list[str]:
        """Who is in the room C{name} (or the current one), on every node, sorted."""

    def kick(self, who: str, minutes: int) -> None:
        """Remove C{who} from the current room for C{minutes} (its owner only)."""

    def invite(self, who: str) -> str:
        """Make the current room invite-only and invite C{who} (its owner only); returns
        their name as they spell it."""

    def status(self) -> Status: ...

    def elsewhere(self) -> defer.Deferred[Elsewhere]:
        """The caller's account's sessions on the other nodes (none for a guest, or alone)."""

    def schedule(self, seconds: int, text: str, to: str | None) -> Any:
        """Send C{text} (to C{to}, or everyone) in C{seconds}; returns the entry."""

    def cancel(self, number: int | None) -> Any:
        """Cancel the caller's scheduled message C{number}, or the last one."""

    def scheduled(self) -> list[Any]: ...

    def register(self, name: str, password: str) -> defer.Deferred[str]:
        """Make an account and log the caller in; fires with its token."""

    def login(self, name: str, password: str) -> defer.Deferred[None]: ...

    def login_with_token(self, token: str) -> defer.Deferred[str | None]:
        """Fires with the account's name, or None for an unknown token."""

    def logout(self) -> None: ...

    def close(self, reason: str) -> None:
        """Close the caller's connection after what it has been told."""


Runner = Callable[[Context, str], Any]


@dataclass(frozen=True)
class Command:
    """One chat command.

    @ivar bare: also runs when a line starts with the bare word (C{exchange 2 USD}).
    @ivar counted: counts as a message for rate limits (it sends something to others).
    @ivar audit_args: write the arguments to the audit log (off for passwords).
    @ivar setup: called once with the L{Services} when the server starts, to build clients.
    @ivar example: one line as a user would type it, for C{/help NAME}.
    """

    name: str
    run: Runner
    aliases: tuple[str, ...] = ()
    usage: str = ""
    help: str = ""
    bare: bool = False
    counted: bool = False
    audit_args: bool = True
    setup: Callable[[Services], Any] | None = None
    example: str = ""

    @property
    def usage_line(self) -> str:
        return f"/{self.name} {self.usage}".rstrip()

    def __call__(self, ctx: Context, args: str) -> Any:
        """Run it; an C{async def} command comes back as a Deferred, already running."""
        result = self.run(ctx, args)
        if inspect.iscoroutine(result):
            return defer.ensureDeferred(result)
        return result


def command(
    name: str,
    *,
    aliases: Iterable[str] = (),
    usage: str = "",
    help: str = "",
    bare: bool = False,
    counted: bool = False,
    audit_args: bool = True,
    setup: Callable[[Services], Any] | None = None,
    example: str = "",
) -> Callable[[Runner], Command]:
    """Turn C{def run(ctx, args)} into a L{Command}, ready to be named by an entry point."""

    def wrap(run: Runner) -> Command:
        return Command(
            name=name,
            run=run,
            aliases=tuple(aliases),
            usage=usage,
            help=help or (run.__doc__ or "").strip().split("\n")[0],
            bare=bare,
            counted=counted,
            audit_args=audit_args,
            setup=setup,
            example=example,
        )

    return wrap


class Registry:
    """Commands by name and alias."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._by_word: dict[str, Command] = {}
        self._commands: list[Command] = []
        for c in commands:
            self.add(c)

    def add(self, cmd: Command, origin: str = "") -> bool:
        """Register C{cmd}; report and refuse it when one of its words is taken."""
        words = [cmd.name, *cmd.aliases]
        clashes = [w for w in words if w.lower() in self._by_word]
        if clashes:
            owner = self._by_word[clashes[0].lower()].name
            log.error(
                "Command plugin {origin} wants /{word}, which /{owner} already has; skipped",
                origin=origin or cmd.name,
                word=clashes[0],
                owner=owner,
            )
            return False
        for w in words:
            self._by_word[w.lower()] = cmd
        self._commands.append(cmd)
        return True

    def get(self, word: str) -> Command | None:
        return self._by_word.get(word.lower())

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands, key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)


def _load(ep: EntryPoint) -> Command | None:
    origin = f"{ep.name} = {ep.value}"
    try:
        obj = ep.load()
    except Exception:
        log.failure("Command plugin {origin} failed to load; skipped", origin=origin)
        return None
    if not isinstance(obj, Command):
        log.error(
            "Command plugin {origin} is a {kind}, not a chatd.commands.Command; skipped",
            origin=origin,
            kind=type(obj).__name__,
        )
        return None
    return obj


def discover(eps: Iterable[EntryPoint] | None = None) -> Registry:
    """Load every command declared in the C{chatd.commands} entry-point group."""
    found = list(entry_points(group=GROUP) if eps is None else eps)
    # chatd's own commands first, so a third-party plugin cannot take over a built-in name.
    found.sort(key=lambda ep: (getattr(ep.dist, "name", "") != "chatd", ep.name))
    registry = Registry()
    for ep in found:
        cmd = _load(ep)
        if cmd is not None:
            registry.add(cmd, origin=f"{ep.name} = {ep.value}")
    return registry
