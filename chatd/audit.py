"""The audit file C{chat_log.txt}: one line per executed command (seed 000)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any


class AuditLog:
    """Appends C{time name door address /command args} lines to a file.

    Lines are short and the file is line-buffered, so a write costs one small syscall; the
    operating system's page cache keeps it off the disk's critical path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)

    def reopen(self) -> None:
        """Close and open the file again: after logrotate renamed it, a new one is begun."""
        if self._file is not None:
            self.close()
            self.open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, when: float, session: Any, command: str, args: str) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        client = session.client
        self._file.write(
            f"{stamp} {session.user.name} {client.door} {client.peer} /{command} {args}".rstrip()
            + "\n"
        )
