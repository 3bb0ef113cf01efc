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
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

if TYPE_CHECKING:
    from chatd.room import Room, Session, User

GROUP = "chatd.commands"
log = Logger(namespace="chatd.commands")


class UsageError(Exception):
    """The arguments are wrong: the user is shown the command's usage line (and the reason)."""


class CommandError(Exception):
    """The command cannot be done: the message tells the user why and what to do instead."""


class Context:
    """What a running command may touch: the room, the caller, and a way to answer."""

    __slots__ = ("room", "session", "invoked_as")

    def __init__(self, room: Room, session: Session, invoked_as: str) -> None:
        self.room = room
        self.session = session
        self.invoked_as = invoked_as

    @property
    def user(self) -> User:
        return self.session.user

    def reply(self, text: str) -> None:
        """A notice to the caller's session only."""
        self.room.tell(self.session, text)

    def error(self, text: str) -> None:
        self.room.tell_error(self.session, text)


Runner = Callable[[Context, str], Any]


@dataclass(frozen=True)
class Command:
    """One chat command.

    @ivar bare: also runs when a line starts with the bare word (C{exchange 2 USD}).
    @ivar counted: counts as a message for rate limits (it sends something to others).
    @ivar audit_args: write the arguments to the audit log (off for passwords).
    @ivar setup: called once with the Room when the server starts, to build clients etc.
    """

    name: str
    run: Runner
    aliases: tuple[str, ...] = ()
    usage: str = ""
    help: str = ""
    bare: bool = False
    counted: bool = False
    audit_args: bool = True
    setup: Callable[[Room], Any] | None = None

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
    setup: Callable[[Room], Any] | None = None,
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
