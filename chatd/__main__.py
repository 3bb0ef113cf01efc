"""C{python -m chatd} and the C{chatd} command: C{twistd -n chatd}, with the same options.

twistd runs the service (the same plugin, logging, signals and reactor); this only spares
typing C{twistd -n --pidfile= chatd}. No pid file: a supervisor (systemd) knows the pid.
"""

from __future__ import annotations

import sys

from twisted.python import usage


def main(argv: list[str] | None = None) -> None:
    from twisted.scripts.twistd import run

    from chatd.service import Options

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["chatd", *args]  # --help and errors name the command as it was typed
    options = Options()
    options.synopsis = f"Usage: chatd {Options.synopsis}"
    try:
        options.parseOptions(args)  # --help prints and exits here
    except usage.UsageError as e:
        sys.exit(f"chatd: {e}\nchatd --help lists the options")
    sys.argv = ["chatd", "--nodaemon", "--pidfile=", "chatd", *args]
    run()


if __name__ == "__main__":
    main()
