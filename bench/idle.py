"""Idle-connections scenario: open N connections that say nothing; server RSS per connection.

    python -m bench.idle --spawn --connections 10000 --door mixed

Every connection still drains what the server sends (welcome, join notices) so the memory
measured is the server's per-connection state, not output queued for a client that
stopped reading. Exit code: 0 all connected and stayed, 1 some failed or were dropped,
2 the scenario could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/idle.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import server as srv  # noqa: E402
from bench.coord import BenchError, Worker, collect, doors_for, split, stop  # noqa: E402
from bench.wire import check_loopback  # noqa: E402
from bench.workers import ReceiverPlan, Target, receiver  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.idle",
        description="Idle connections: what one connected client costs chatd in memory.",
    )
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--door", choices=("line", "ws", "irc", "mixed"), default="mixed")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to stay idle, then recount")
    srv.add_run_options(p, connect_timeout=60.0, settle_timeout=600.0, timeout=1800.0)
    srv.add_server_options(p)
    args = p.parse_args(argv)
    if min(args.connections, args.procs, args.connect_window) < 1:
        p.error("--connections, --procs and --connect-window must be >= 1")
    args.procs = min(args.procs, args.connections)
    return args


def run(args: argparse.Namespace, addr: str, spawned: srv.Spawned | None) -> dict[str, Any]:
    """Connect everybody, wait for the server to calm down, read RSS, hold, recount."""
    start = time.monotonic()
    deadline = start + args.timeout
    pid = args.server_pid
    fig: dict[str, Any] = {"notes": []}
    if pid:
        srv.settle(pid, 10.0)
        fig["rss_idle_kb"] = srv.rss_kb(pid)
        fig["cpu0"] = srv.cpu_seconds(pid)
    target = Target(addr, args.line_port, args.web_port, args.ws_path, args.haproxy, args.irc_port)
    parts = split(doors_for(args.door, args.connections), args.procs)
    window = max(1, args.connect_window // len(parts))
    plan = [ReceiverPlan(target, part, 0, window, args.connect_timeout, 0) for part in parts]
    workers = [Worker(f"idle-{i}", receiver, p) for i, p in enumerate(plan)]
    try:
        t0 = time.monotonic()
        if collect(workers, "ready", deadline):
            raise BenchError("connections not set up before --timeout")
        fig["connect_s"] = time.monotonic() - t0
        fig["open"] = sum(w.replies["ready"]["open"] for w in workers)
        fig["failed"] = sum(w.replies["ready"]["failed"] for w in workers)
        for w in workers:
            fig["notes"] += w.replies["ready"]["notes"]
        if fig["open"] == 0:
            raise BenchError("no connection could be opened: " + "; ".join(fig["notes"][:3]))
        if pid:
            left = max(1.0, min(args.settle_timeout, deadline - time.monotonic()))
            fig["settle_s"] = srv.settle(pid, left)
            fig["cpu1"] = srv.cpu_seconds(pid)
            fig["rss_conn_kb"] = srv.rss_kb(pid)
        time.sleep(max(0.0, min(args.hold, deadline - time.monotonic())))
        for w in workers:
            w.send("report")
        if collect(workers, "result", time.monotonic() + 30):
            raise BenchError("generator processes did not report")
        if pid and (spawned is None or spawned.proc.poll() is None):
            fig["rss_hold_kb"] = srv.rss_kb(pid)
        if spawned and spawned.proc.poll() is not None:
            fig["notes"].append(f"server exited during the run, code {spawned.proc.returncode}")
    finally:
        if spawned:  # first, so that it does not announce thousands of departures
            spawned.mark_log()
            spawned.stop()
        stop(workers)
    fig["generator_cpu_s"] = [round(w.replies["result"]["cpu"], 2) for w in workers]
    fig["dropped"] = sum(w.replies["result"]["disconnected"] for w in workers)
    fig["error_lines"] = sum(w.replies["result"]["error_lines"] for w in workers)
    for w in workers:
        fig["notes"] += w.replies["result"]["notes"]
    return fig


def summarize(args: argparse.Namespace, fig: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": args.label or f"idle {args.door} {args.connections}",
        "door": args.door,
        "connections": args.connections,
        "procs": args.procs,
        "open": fig["open"],
        "connect_failed": fig["failed"],
        "connect_s": round(fig["connect_s"], 2),
        "settle_s": round(fig.get("settle_s", 0), 2),
        "dropped_while_idle": fig["dropped"],
        "error_lines": fig["error_lines"],
        "generator_cpu_s": fig["generator_cpu_s"],
    }
    if "rss_conn_kb" in fig and fig["open"]:
        out["rss_idle_mb"] = round(fig["rss_idle_kb"] / 1024, 1)
        out["rss_conn_mb"] = round(fig["rss_conn_kb"] / 1024, 1)
        out["rss_kb_per_conn"] = round((fig["rss_conn_kb"] - fig["rss_idle_kb"]) / fig["open"], 2)
        out["server_cpu_connect_s"] = round(fig["cpu1"] - fig["cpu0"], 2)
        out["server_ms_per_connect"] = round((fig["cpu1"] - fig["cpu0"]) / fig["open"] * 1e3, 3)
    if "rss_hold_kb" in fig:
        out["rss_after_hold_mb"] = round(fig["rss_hold_kb"] / 1024, 1)
    out["notes"] = list(dict.fromkeys(fig["notes"]))[:20]
    return out


def report(out: dict[str, Any]) -> str:
    lines = [
        f"scenario     {out['scenario']}  (generator procs: {out['procs']})",
        f"connect      {out['open']} of {out['connections']} open in {out['connect_s']} s, "
        f"server busy {out['settle_s']} s more (join notices)",
        f"idle         {out['dropped_while_idle']} dropped during the hold; "
        f"server error lines {out['error_lines']}",
        f"generator    CPU s per process: {out['generator_cpu_s']}",
    ]
    if "rss_kb_per_conn" in out:
        lines.append(
            f"server RSS   {out['rss_idle_mb']} MB idle, {out['rss_conn_mb']} MB connected: "
            f"{out['rss_kb_per_conn']} KB per connection"
            + (
                f" ({out['rss_after_hold_mb']} MB after the hold)"
                if "rss_after_hold_mb" in out
                else ""
            )
        )
        lines.append(
            f"server CPU   {out['server_cpu_connect_s']} s to accept everybody = "
            f"{out['server_ms_per_connect']} ms per connection"
        )
    else:
        lines.append("server RSS   n/a (give --server-pid or --spawn)")
    lines += [f"note         {n}" for n in out["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        addr = check_loopback(args.host)
    except ValueError as e:
        print(f"idle: {e}", file=sys.stderr)
        return 2
    limit = srv.raise_nofile()
    need = -(-args.connections // args.procs) + 64
    if need > limit:
        print(
            f"idle: {need} descriptors per process needed, limit is {limit}; use more --procs",
            file=sys.stderr,
        )
        return 2
    out = srv.run_scenario("idle", args, addr, run, summarize, report)
    if out is None:
        return 2
    return 0 if out["open"] == args.connections and not out["dropped_while_idle"] else 1


if __name__ == "__main__":
    sys.exit(main())
