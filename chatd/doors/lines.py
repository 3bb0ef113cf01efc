"""Splitting a byte stream into lines, for every door that reads lines (line, minechat).

A line ends at CR LF, CR NUL (what telnet sends in character mode), LF, or a lone CR. An
over-long line is reported once and skipped up to its end; the lines after it are kept,
so a user who pasted too much loses only that line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_LINE_END = re.compile(rb"\r[\n\0]?|\n")


class LineSplitter:
    """Feed it segments as they arrive; it calls C{line(bytes)} for each line (without its
    ending) and C{too_long()} once per over-long line.

    @ivar max_bytes: the longest line taken (a door may set it after building this).
    @param stopped: asked between lines; once true, the rest of the segment is left (the
        connection is closing).
    """

    def __init__(
        self,
        max_bytes: int,
        line: Callable[[bytes], object],
        too_long: Callable[[], object],
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self.max_bytes = max_bytes
        self._line = line
        self._too_long = too_long
        self._stopped = stopped
        self._rest = b""  # the start of a line whose end has not arrived
        self._skipping = False  # the rest of an over-long line is being skipped
        self._after_cr = False  # a CR ended the last line: an LF or NUL next belongs to it

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._after_cr:
            self._after_cr = False
            if data[0] in (0x0A, 0x00):
                data = data[1:]
        buffer = self._rest + data if self._rest else data
        start = 0
        limit = self.max_bytes
        search, stopped, line = _LINE_END.search, self._stopped, self._line
        while not stopped():
            end = search(buffer, start)
            if end is None:
                break
            stop = end.start()
            if self._skipping:
                self._skipping = False
            elif stop - start > limit:
                self._too_long()
            else:
                line(buffer[start:stop])
            start = end.end()
        self._after_cr = start == len(buffer) and buffer[-1:] == b"\r"
        rest = buffer[start:]
        if len(rest) > limit and not self._skipping:
            self._too_long()
            self._skipping = True
        self._rest = b"" if self._skipping else rest
