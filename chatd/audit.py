"""The audit file C{chat_log.txt}: one line per executed command (seed 000)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from twisted.logger import Logger

log = Logger(namespace="chatd.audit")

# Longest command arguments a log line keeps, in UTF-8 bytes: enough for any real command,
# and a stranger's megabytes cost the disk no more than that.
MAX_ARGS_BYTES = 512


def bounded(args: str, limit: int = MAX_ARGS_BYTES) -> str:
    """C{args} as a log line shows them: cut to C{limit} bytes, with a note of their size."""
    if len(args) * 4 <= limit:
        return args
    data = args.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return args
    return data[:limit].decode("utf-8", "ignore") + f" \u2026 ({len(data)} bytes)"


class AuditLog:
    """Appends C{time name door address /command args} lines to a file.

    Lines are short and the file is line-buffered, so a write costs one small syscall; the
    operating system's page cache keeps it off the disk's critical path. A write that fails
    (a full disk) never fails the command: the server log says so once per outage, and
    once more when lines are written again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self.missed = 0  # lines lost in the current outage

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
            try:
                self._file.close()
            except OSError as e:  # the last buffered line could not be written
                log.warn("closing the audit log {path} failed: {e}", path=self.path, e=e)
            self._file = None

    def record(self, when: float, session: Any, command: str, args: str) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        client = session.client
        line = f"{stamp} {session.user.name} {client.door} {client.peer} /{command} {bounded(args)}"
        try:
            self._file.write(line.rstrip() + "\n")
        except (OSError, ValueError) as e:  # ValueError: a file closed under us
            self._failed(e)
        else:
            if self.missed:
                log.info(
                    "the audit log {path} is written again; {n} lines may be missing from it",
                    path=self.path,
                    n=self.missed,
                )
                self.missed = 0

    def _failed(self, e: Exception) -> None:
        if not self.missed:
            log.error(
                "cannot write the audit log {path} ({e}); commands run on unaudited until "
                "it can be written again",
                path=self.path,
                e=e,
            )
        self.missed += 1
