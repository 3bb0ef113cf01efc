"""The server under test: start it on free ports (--spawn), read its CPU and memory.

CPU and RSS come from /proc so the figures cost the server nothing and need no hooks.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.coord import BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
REPO = Path(__file__).resolve().parent.parent

# Limits off: the bench measures fan-out, not the flood and moderation rules.
BENCH_INI = """\
[moderation]
messages_per_hour = 0
[flood]
lines_per_second = 0
connections_per_address = 0
new_connections_per_minute = 0
"""


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one; thousands of sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def cpu_seconds(pid: int) -> float:
    """user+sys CPU of a whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_kb(pid: int) -> int:
    """Resident set size in KiB, from /proc/PID/statm (cheaper than status)."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE_KB


def settle(pid: int | None, timeout: float, fallback: float = 2.0) -> float:
    """Wait until the server stops working (join notices sent, buffers flushed).

    With a pid: until its CPU use stays under 3% for two 0.25 s samples; else sleep.
    Returns the seconds waited.
    """
    start = time.monotonic()
    if pid is None:
        time.sleep(fallback)
        return fallback
    quiet = 0
    last = cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.0075 else 0
        last = now
        if quiet >= 2:
            break
    return time.monotonic() - start


def free_port(host: str) -> int:
    """A port nobody listens on right now (tiny race, acceptable for a bench)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def machine() -> str:
    """One line describing the machine, for reports."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def add_run_options(
    p: argparse.ArgumentParser, connect_timeout: float, settle_timeout: float, timeout: float
) -> None:
    """Options every scenario has for pacing and bounding its run, and for its output."""
    p.add_argument("--connect-window", type=int, default=64, help="connections set up at once")
    p.add_argument(
        "--connect-timeout", type=float, default=connect_timeout, help="per connection, s"
    )
    p.add_argument(
        "--settle-timeout", type=float, default=settle_timeout, help="wait for idle server, s"
    )
    p.add_argument("--timeout", type=float, default=timeout, help="whole run, s")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--label", help="scenario name for the JSON/table")


def add_server_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every scenario for reaching or starting the server."""
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="server address (loopback only)")
    g.add_argument("--line-port", type=int, default=6969, help="line door port")
    g.add_argument("--web-port", type=int, default=8080, help="web/WebSocket door port")
    g.add_argument("--irc-port", type=int, default=6667, help="IRC door port")
    g.add_argument("--ws-path", default="/", help="WebSocket path (/ or /ws)")
    g.add_argument(
        "--haproxy",
        action="store_true",
        help="the doors expect HAProxy's PROXY header (haproxy: endpoints); the generator "
        "sends it first, as HAProxy would",
    )
    g.add_argument("--server-pid", type=int, help="pid of a running server, for CPU and RSS")
    g.add_argument(
        "--spawn", action="store_true", help="start the server on free ports and stop it after"
    )
    g.add_argument("--twistd", help="twistd to use with --spawn (default: next to python, PATH)")
    g.add_argument(
        "--server-cmd",
        help="with --spawn, command replacing 'twistd -n --pidfile= chatd' (door options "
        "are appended), e.g. to bench another build",
    )
    g.add_argument("--keep-data", action="store_true", help="keep the spawned server's data dir")
    g.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="with --spawn, let the scheduler place the server and the generator (by default "
        "the server has the last CPU to itself and the generator the others: where the "
        "scheduler puts a server's threads next to the generator moved its CPU per delivery "
        "by half between runs)",
    )


@dataclass
class Spawned:
    """A server started by the bench, with where its output went."""

    proc: subprocess.Popen
    data_dir: Path
    log: Path
    keep: bool = False
    notes: list[str] = field(default_factory=list)
    log_mark: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mark_log(self) -> None:
        """Remember where the log ends now: later lines belong to the shutdown."""
        try:
            self.log_mark = self.log.stat().st_size
        except OSError:
            self.log_mark = None

    def log_problems(self) -> tuple[list[str], list[str]]:
        """Errors, tracebacks and warnings the server logged: (during the run, at shutdown).

        Warnings logged before the first client connected are start-up remarks, skipped.
        """
        try:
            data = self.log.read_bytes()
        except OSError:
            return [], []
        cut = len(data) if self.log_mark is None else self.log_mark
        found: tuple[list[str], list[str]] = ([], [])
        for part, out, started in ((data[:cut], found[0], False), (data[cut:], found[1], True)):
            for line in part.decode("utf-8", "replace").splitlines():
                started = started or "connected" in line
                if any(m in line for m in ("#error]", "#critical]", "Traceback", "Unhandled")):
                    out.append(line.strip()[:200])
                elif started and "#warn]" in line:
                    out.append(line.strip()[:200])
        return found

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.notes.append(f"server ignored SIGTERM for {timeout:.0f} s, killed")
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        """Stop if needed and remove the temporary data dir (unless --keep-data)."""
        self.stop()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _server_child_setup(core: int | None) -> None:
    """preexec_fn: the server needs as many descriptors as the bench opens; pinned, it runs
    on C{core} alone (its threads too)."""
    raise_nofile()
    if core is not None:
        os.sched_setaffinity(0, {core})


def pinning(pin: bool) -> int | None:
    """The CPU a spawned server gets to itself, or None (not asked, or one CPU only)."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[-1] if pin and len(cores) > 1 else None


def _twistd(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found:
        return found
    raise RuntimeError("no twistd found; pass --twistd /path/to/venv/bin/twistd")


def spawn(args: argparse.Namespace, timeout: float = 30.0) -> Spawned:
    """Start chatd via twistd on free loopback ports; updates args.*_port and server_pid."""
    data_dir = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
    ini = data_dir / "bench.ini"
    ini.write_text(BENCH_INI)
    log = data_dir / "server.log"
    args.line_port = free_port(args.host)
    args.web_port = free_port(args.host)
    args.irc_port = free_port(args.host)
    proxy = "haproxy:" if args.haproxy else ""
    if args.server_cmd:
        cmd = shlex.split(args.server_cmd)
    else:
        cmd = [_twistd(args.twistd), "-n", "--pidfile=", "chatd"]
    cmd += [
        "--line", f"{proxy}tcp:{args.line_port}:interface={args.host}",
        "--web", f"{proxy}tcp:{args.web_port}:interface={args.host}",
        "--irc", f"{proxy}tcp:{args.irc_port}:interface={args.host}",
        "--minechat-read", "none",
        "--minechat-write", "none",
        "--data-dir", str(data_dir / "data"),
        "--config", str(ini),
    ]  # fmt: skip
    env = dict(os.environ)
    # Let twistd find the chatd plugin from this checkout even if it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    core = pinning(getattr(args, "pin", True))
    if core is not None:  # the bench and the generator processes it forks: the other CPUs
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - {core})
        args.pinned = core
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env=env,
            preexec_fn=functools.partial(_server_child_setup, core),
            start_new_session=True,  # Ctrl-C on the bench must not hit the server first
        )
    server = Spawned(proc, data_dir, log, keep=args.keep_data)
    args.server_pid = proc.pid
    try:
        for port in (args.line_port, args.web_port, args.irc_port):
            wait_listening(args.host, port, proc, timeout)
    except RuntimeError:
        tail = server.tail()
        server.cleanup()
        raise RuntimeError(f"server did not start ({' '.join(cmd)}):\n{tail}") from None
    return server


def wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Poll until the port accepts connections, or the process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def run_scenario(
    prog: str,
    args: argparse.Namespace,
    addr: str,
    run: Callable[[argparse.Namespace, str, Spawned | None], dict[str, Any]],
    summarize: Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
) -> dict[str, Any] | None:
    """Run a scenario (starting the server with --spawn), print and save its figures.

    Shared by every scenario so that the spawned server's log findings are reported alike.
    Returns the figures, or None when the scenario could not run (already said on stderr).
    """
    spawned = None
    problems: list[str] = []
    at_exit: list[str] = []
    try:
        if args.spawn:
            spawned = spawn(args)
        fig = run(args, addr, spawned)
    except (BenchError, RuntimeError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return None
    finally:
        if spawned:
            spawned.stop()
            problems, at_exit = spawned.log_problems()
            spawned.cleanup()
    out = summarize(args, fig)
    if spawned:
        out["server_log_problems"] = len(problems)
        out["server_log_problems_at_exit"] = len(at_exit)
        out["server_killed"] = any("killed" in n for n in spawned.notes)
        out["notes"] += [f"server log: {p}" for p in problems[:5]] + spawned.notes
        if at_exit:
            out["notes"].append(f"server log at shutdown ({len(at_exit)}): {at_exit[0]}")
    out["machine"] = machine()
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out
