"""Reconnect storm: N clients connect at once, as after a restart; time until every one is
greeted, and the server CPU each connect cost.

    python -m bench.storm --spawn --connections 10000 --door mixed --procs 4

Each generator process opens its share of the connections all at once when told "go" (no
connect window: the listen backlog and the accept loop are part of what is measured), sends
the WebSocket upgrade where needed, and notes when the server's welcome arrives. Exit code:
0 everybody was greeted, 1 some were not, 2 the scenario could not run.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/storm.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import server as srv  # noqa: E402
from bench.coord import BenchError, Worker, collect, doors_for, split, stop  # noqa: E402
from bench.wire import WS, check_loopback, proxy_header, ws_request  # noqa: E402
from bench.workers import Target  # noqa: E402

GREETING = b"Welcome"  # in the server's first notice, on both doors
MAX_NOTES = 8


@dataclass
class StormPlan:
    target: Target
    doors: list[str]
    timeout: float  # seconds after "go" to give up on the ones not greeted


def storm_worker(ctl: Connection, plan: StormPlan) -> None:
    """On ("go", t0): open every connection at once; report when all are greeted (or gave
    up), then keep them open and drain them until "stop"."""
    target = plan.target
    ep = select.epoll()
    ctl_fd = ctl.fileno()
    ep.register(ctl_fd, select.EPOLLIN)
    socks: dict[int, tuple[socket.socket, str]] = {}
    waiting: dict[int, bytes] = {}  # not greeted yet: what came so far (a greeting may split)
    notes: list[str] = []
    failed = greeted = 0
    first = last = 0
    deadline = 0
    reported = False

    def note(text: str) -> None:
        if len(notes) < MAX_NOTES:
            notes.append(text)

    def drop(fd: int, why: str | None) -> None:
        nonlocal failed
        sock, _ = socks.pop(fd)
        if waiting.pop(fd, None) is not None:
            failed += 1
            if why:
                note(why)
        try:
            ep.unregister(fd)
        except (OSError, ValueError):
            pass
        sock.close()

    while True:
        if deadline and not reported and (not waiting or time.monotonic_ns() > deadline):
            info = {"greeted": greeted, "failed": failed, "late": len(waiting), "first": first,
                    "last": last, "cpu": time.process_time(), "notes": notes}  # fmt: skip
            ctl.send(("greeted", info))
            reported = True
        for fd, ev in ep.poll(0.1 if deadline else 1.0):
            if fd == ctl_fd:
                msg = ctl.recv()
                if msg[0] == "go":
                    deadline = msg[1] + int(plan.timeout * 1e9)
                    for door in plan.doors:
                        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        s.setblocking(False)
                        err = s.connect_ex((target.addr, target.port(door)))
                        if err not in (0, errno.EINPROGRESS):
                            failed += 1
                            note(f"connect: {os.strerror(err)}")
                            s.close()
                            continue
                        socks[s.fileno()] = (s, door)
                        waiting[s.fileno()] = b""
                        ep.register(s.fileno(), select.EPOLLOUT)
                elif msg[0] == "stop":
                    for s, _ in socks.values():
                        s.close()
                    ep.close()
                    return
                continue
            sock, door = socks.get(fd, (None, ""))
            if sock is None:
                continue
            if ev & select.EPOLLOUT:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    drop(fd, f"connect: {os.strerror(err)}")
                    continue
                req = proxy_header(sock) if target.haproxy else b""
                if door == WS:
                    req += ws_request(target.addr, target.web_port, target.ws_path)
                if req and sock.send(req) != len(req):
                    drop(fd, "handshake request not sent at once")
                    continue
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                drop(fd, f"{door} recv: {e}")
                continue
            if not data:
                drop(fd, f"{door}: closed by the server")
                continue
            so_far = waiting.get(fd)
            if so_far is None:
                continue  # greeted already: only drained
            so_far += data
            if GREETING in so_far:
                del waiting[fd]
                now = time.monotonic_ns()
                first = first or now
                last = now
                greeted += 1
            else:
                waiting[fd] = so_far[-4096:]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.storm",
        description="Reconnect storm: everybody connects at once; time to greet them all.",
    )
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--door", choices=("line", "ws", "mixed"), default="mixed")
    p.add_argument("--procs", type=int, default=4, help="generator processes")
    p.add_argument("--greet-timeout", type=float, default=120.0, help="give up after, s")
    p.add_argument("--settle-timeout", type=float, default=300.0, help="wait for idle server, s")
    p.add_argument("--timeout", type=float, default=900.0, help="whole run, s")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--label", help="scenario name for the JSON/table")
    srv.add_server_options(p)
    args = p.parse_args(argv)
    if min(args.connections, args.procs) < 1:
        p.error("--connections and --procs must be >= 1")
    args.procs = min(args.procs, args.connections)
    return args


def run(args: argparse.Namespace, addr: str, spawned: srv.Spawned | None) -> dict[str, Any]:
    """Start the generators, let them all connect at once, wait for every greeting."""
    deadline = time.monotonic() + args.timeout
    pid = args.server_pid
    fig: dict[str, Any] = {"notes": []}
    target = Target(addr, args.line_port, args.web_port, args.ws_path, args.haproxy)
    parts = split(doors_for(args.door, args.connections), args.procs)
    workers = [
        Worker(f"storm-{i}", storm_worker, StormPlan(target, part, args.greet_timeout))
        for i, part in enumerate(parts)
    ]
    try:
        if pid:
            srv.settle(pid, 10.0)
            fig["rss0_kb"] = srv.rss_kb(pid)
            fig["cpu0"] = srv.cpu_seconds(pid)
        t0 = time.monotonic_ns()
        for w in workers:
            w.send("go", t0)  # type: ignore[arg-type]
        if collect(workers, "greeted", deadline):
            raise BenchError("generators did not report before --timeout")
        replies = [w.replies["greeted"] for w in workers]
        if pid:
            fig["cpu_greeted"] = srv.cpu_seconds(pid)
            left = max(1.0, min(args.settle_timeout, deadline - time.monotonic()))
            fig["settle_s"] = srv.settle(pid, left)
            fig["cpu1"] = srv.cpu_seconds(pid)
            fig["rss1_kb"] = srv.rss_kb(pid)
        fig["greeted"] = sum(r["greeted"] for r in replies)
        fig["failed"] = sum(r["failed"] for r in replies)
        fig["late"] = sum(r["late"] for r in replies)
        lasts = [r["last"] for r in replies if r["last"]]
        firsts = [r["first"] for r in replies if r["first"]]
        fig["all_greeted_s"] = (max(lasts) - t0) / 1e9 if lasts else None
        fig["first_greeted_s"] = (min(firsts) - t0) / 1e9 if firsts else None
        fig["generator_cpu_s"] = [round(r["cpu"], 2) for r in replies]
        for r in replies:
            fig["notes"] += r["notes"]
        if spawned and spawned.proc.poll() is not None:
            fig["notes"].append(f"server exited during the run, code {spawned.proc.returncode}")
    finally:
        if spawned:  # first, so that it does not announce thousands of departures
            spawned.mark_log()
            spawned.stop()
        stop(workers)
    return fig


def summarize(args: argparse.Namespace, fig: dict[str, Any]) -> dict[str, Any]:
    n = args.connections
    out: dict[str, Any] = {
        "scenario": args.label or f"storm {args.door} {n}",
        "door": args.door,
        "connections": n,
        "procs": args.procs,
        "greeted": fig["greeted"],
        "connect_failed": fig["failed"],
        "not_greeted": fig["failed"] + fig["late"],
        "all_greeted_s": None if fig["all_greeted_s"] is None else round(fig["all_greeted_s"], 2),
        "first_greeted_s": fig["first_greeted_s"] and round(fig["first_greeted_s"], 3),
        "generator_cpu_s": fig["generator_cpu_s"],
    }
    if "cpu1" in fig and fig["greeted"]:
        out["settle_s"] = round(fig["settle_s"], 2)
        out["server_cpu_greeting_s"] = round(fig["cpu_greeted"] - fig["cpu0"], 2)
        out["server_cpu_connect_s"] = round(fig["cpu1"] - fig["cpu0"], 2)
        out["server_ms_per_connect"] = round((fig["cpu1"] - fig["cpu0"]) / fig["greeted"] * 1e3, 3)
        out["rss_kb_per_conn"] = round((fig["rss1_kb"] - fig["rss0_kb"]) / fig["greeted"], 2)
    out["notes"] = list(dict.fromkeys(fig["notes"]))[:20]
    return out


def report(out: dict[str, Any]) -> str:
    lines = [
        f"scenario     {out['scenario']}  (generator procs: {out['procs']})",
        f"greeted      {out['greeted']} of {out['connections']}, the last after "
        f"{out['all_greeted_s']} s (the first after {out['first_greeted_s']} s); "
        f"{out['not_greeted']} not greeted",
        f"generator    CPU s per process: {out['generator_cpu_s']}",
    ]
    if "server_ms_per_connect" in out:
        lines.append(
            f"server CPU   {out['server_cpu_greeting_s']} s until all were greeted, "
            f"{out['server_cpu_connect_s']} s with what followed ({out['settle_s']} s more) = "
            f"{out['server_ms_per_connect']} ms per connect"
        )
        lines.append(f"server RSS   {out['rss_kb_per_conn']} KB per connection")
    else:
        lines.append("server CPU   n/a (give --server-pid or --spawn)")
    lines += [f"note         {n}" for n in out["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        addr = check_loopback(args.host)
    except ValueError as e:
        print(f"storm: {e}", file=sys.stderr)
        return 2
    limit = srv.raise_nofile()
    need = -(-args.connections // args.procs) + 64
    if need > limit or args.connections + 100 > limit:
        print(
            f"storm: {args.connections + 100} descriptors needed by the server and {need} per "
            f"generator process, limit is {limit}",
            file=sys.stderr,
        )
        return 2
    out = srv.run_scenario("storm", args, addr, run, summarize, report)
    if out is None:
        return 2
    return 0 if out["not_greeted"] == 0 and out["greeted"] == args.connections else 1


if __name__ == "__main__":
    sys.exit(main())
