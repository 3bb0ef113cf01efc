"""Name rules: what a valid name is, which names are taken or reserved, and picking free
ones (guest names, a free variant of a wished-for name).

A registered name is reserved whether its account is online or not, on every node; a name
someone holds (here or, as last heard, on another node) is taken.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable

from chatd.members import Members
from chatd.people import User, name_key

_NAME = re.compile(r"[^\W][\w.-]*\Z")
_NOT_NAME = re.compile(r"[^\w.-]+|^[.-]+")


class Names:
    """The name rules of one node.

    @ivar accounts: name key -> the account's own spelling, for every account: a name that
        looks like an account's (C{аlice} for C{alice}) is that account's too.
    """

    def __init__(
        self,
        members: Members,
        max_length: int,
        namer: Callable[[], str],
        accounts: Iterable[str] = (),
    ) -> None:
        self.members = members
        self.max_length = max_length
        self.namer = namer
        self.accounts = {name_key(name): name for name in accounts}

    def problem(self, name: str, user: User | None = None) -> str | None:
        """Why C{name} cannot be taken (by C{user}), or None when it can."""
        limit = self.max_length
        if not 2 <= len(name) <= limit:
            return f"a name has 2 to {limit} characters"
        if not _NAME.match(name):
            return "a name has letters, digits, '.', '-' or '_', and starts with a letter or digit"
        owner = self.accounts.get(name_key(name))
        if owner is not None and (user is None or user.account != owner):
            return (
                f"the name {owner} belongs to an account; /login {owner} <password> if it is yours"
            )
        holder = self.members.find(name)
        if (holder is not None and holder is not user) or (
            holder is None and name_key(name) in self.members.elsewhere
        ):
            return f"the name {name} is taken; pick another"
        return None

    def owner(self, name: str) -> str | None:
        """The account called C{name} (in its own spelling), online or not."""
        return self.accounts.get(name_key(name))

    def reserve(self, name: str) -> None:
        self.accounts[name_key(name)] = name

    def release(self, name: str) -> None:
        """An account was not made after all: its name is free again."""
        if self.accounts.get(name_key(name)) == name:
            del self.accounts[name_key(name)]

    def guest(self) -> str:
        """A free guest name."""
        for attempt in range(50):
            name = self.namer()
            if attempt >= 10:
                name = f"{name}{attempt}"
            if self.problem(name) is None:
                return name
        raise RuntimeError("no free guest name")  # pragma: no cover - needs 50 clashes

    def variant(self, wish: str, user: User) -> str:
        """C{wish} made a valid, free name (C{Sam2}, ...), or a guest name if nothing is left."""
        limit = self.max_length
        base = _NOT_NAME.sub("", wish).lstrip(".-")[:limit]
        if len(base) < 2:
            return self.guest()
        for n in itertools.count(1):
            suffix = str(n) if n > 1 else ""
            name = base[: limit - len(suffix)] + suffix
            if self.problem(name, user) is None:
                return name
        raise AssertionError("unreachable")  # pragma: no cover
