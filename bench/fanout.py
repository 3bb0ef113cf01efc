"""Fan-out scenario: N receivers, S senders, M stamped messages; latency and cost per delivery.

    python -m bench.fanout --spawn --door line --receivers 1000 --rate 50 --messages 500

Every message is `b <seq> <monotonic_ns>`; CLOCK_MONOTONIC is one clock for the whole
machine, so a receiver process subtracts the stamp from its own clock to get the latency.
Exit code: 0 every delivery arrived, 1 the run finished with losses/failures, 2 it could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/fanout.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import server as srv  # noqa: E402
from bench.coord import (  # noqa: E402
    BenchError,
    Worker,
    collect,
    doors_for,
    fmt_num,
    percentile,
    split,
    stop,
)
from bench.wire import LINE, WS, check_loopback  # noqa: E402
from bench.workers import ReceiverPlan, SenderPlan, Target, receiver, sender  # noqa: E402

BUSY = 0.85  # a generator process above this share of one core may be the bottleneck


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description="Fan-out load: how fast and how cheaply chatd delivers one line to many.",
    )
    p.add_argument("--door", choices=("line", "ws", "irc", "mixed"), default="line")
    p.add_argument("--receivers", type=int, default=100, help="receiving connections")
    p.add_argument("--senders", type=int, default=1, help="sending connections")
    p.add_argument("--sender-door", choices=("same", "line", "ws", "irc"), default="same")
    p.add_argument("--messages", type=int, default=500, help="messages sent in all")
    p.add_argument("--rate", type=float, default=50.0, help="messages/s in all; 0 = flat out")
    p.add_argument(
        "--window",
        type=int,
        default=32,
        help="with --rate 0: messages queued in the server at most, watched by a probe "
        "connection (0 = send everything at once)",
    )
    p.add_argument(
        "--rooms",
        type=int,
        default=1,
        help="rooms the receivers are spread over (each /joins #bench-N); each room gets a "
        "sender of its own (--senders is raised to this), which post round-robin",
    )
    p.add_argument(
        "--idle",
        type=int,
        default=0,
        help="connections more that /join #idle and say nothing: the same socket count as a "
        "run with more rooms, with fewer of them busy",
    )
    p.add_argument("--procs", type=int, default=1, help="receiver processes")
    p.add_argument("--drain-timeout", type=float, default=5.0, help="wait for stragglers, s")
    srv.add_run_options(p, connect_timeout=30.0, settle_timeout=120.0, timeout=600.0)
    srv.add_server_options(p)
    args = p.parse_args(argv)
    if min(args.receivers, args.senders, args.messages, args.procs, args.connect_window) < 1:
        p.error("--receivers, --senders, --messages, --procs, --connect-window must be >= 1")
    if args.rate < 0 or args.window < 0 or args.idle < 0:
        p.error("--rate, --window and --idle must be >= 0")
    if args.rooms < 1:
        p.error("--rooms must be >= 1")
    if args.rooms > 1:
        args.senders = max(args.senders, args.rooms)
        if args.receivers % args.rooms or args.senders % args.rooms or args.messages % args.rooms:
            p.error("with --rooms N, --receivers, --senders and --messages are multiples of N")
    args.procs = min(args.procs, args.receivers)
    return args


def rooms_for(args: argparse.Namespace, count: int) -> list[str]:
    """The room each of C{count} connections joins, dealt round-robin (none with one room:
    everyone stays in the default room, as before rooms; but beside idle connections, which
    are in the default room too, the one room is a room of its own)."""
    if args.rooms == 1 and not args.idle:
        return []
    return [f"#bench-{i % args.rooms}" for i in range(count)]


def probe(args: argparse.Namespace) -> bool:
    """Whether the sender opens a probe connection (flat out with a window)."""
    return args.rate == 0 and args.window > 0


def sender_doors(args: argparse.Namespace) -> list[str]:
    if args.sender_door != "same":
        return [args.sender_door] * args.senders
    return doors_for(args.door, args.senders)


def run(args: argparse.Namespace, addr: str, spawned: srv.Spawned | None) -> dict[str, Any]:
    """Connect, settle, send, collect; returns the raw figures."""
    start = time.monotonic()
    deadline = start + args.timeout
    pid = args.server_pid
    target = Target(addr, args.line_port, args.web_port, args.ws_path, args.haproxy, args.irc_port)
    fig: dict[str, Any] = {"notes": []}
    if pid:
        srv.settle(pid, min(10.0, args.settle_timeout))
        fig["rss_idle_kb"] = srv.rss_kb(pid)
    doors = doors_for(args.door, args.receivers)
    parts = split(doors, args.procs)
    rooms = rooms_for(args, args.receivers)
    room_parts = split(rooms, args.procs) if rooms else [[] for _ in parts]
    window = max(1, args.connect_window // len(parts))
    each = args.messages // args.rooms  # a receiver hears its own room's messages
    workers = [
        Worker(
            f"receivers-{i}",
            receiver,
            ReceiverPlan(
                target,
                part,
                each,
                window,
                args.connect_timeout,
                args.drain_timeout,
                room_parts[i],
            ),
        )
        for i, part in enumerate(parts)
    ]
    idle = [
        Worker(
            f"idle-{i}",
            receiver,
            ReceiverPlan(target, part, 0, window, args.connect_timeout, 0, ["#idle"] * len(part)),
        )
        for i, part in enumerate(split(doors_for(args.door, args.idle), args.procs))
        if args.idle
    ]
    sending: Worker | None = None
    try:
        if collect(idle, "ready", deadline):
            raise BenchError("idle connections not open before --timeout")
        fig["idle_open"] = sum(w.replies["ready"]["open"] for w in idle)
        late = collect(workers, "ready", deadline)
        if late:
            raise BenchError(f"{len(late)} receiver processes not connected before --timeout")
        fig["connect_s"] = time.monotonic() - start
        fig["open"] = sum(w.replies["ready"]["open"] for w in workers)
        fig["connect_failed"] = sum(w.replies["ready"]["failed"] for w in workers)
        for w in workers:
            fig["notes"] += w.replies["ready"]["notes"]
        if fig["open"] == 0:
            raise BenchError("no receiver could connect: " + "; ".join(fig["notes"][:3]))
        sending = Worker(
            "sender",
            sender,
            SenderPlan(
                target,
                sender_doors(args),
                args.messages,
                args.rate,
                args.window,
                args.connect_timeout,
                max(1.0, deadline - time.monotonic()),
                rooms_for(args, args.senders),
            ),
        )
        if collect([sending], "ready", deadline) or not sending.replies["ready"]["ok"]:
            raise BenchError(
                "sender could not connect: "
                + "; ".join(sending.replies.get("ready", {}).get("notes", ["timeout"]))
            )
        if pid:
            fig["settle_s"] = srv.settle(pid, min(args.settle_timeout, deadline - time.monotonic()))
            fig["rss_conn_kb"] = srv.rss_kb(pid)
            fig["cpu0"] = srv.cpu_seconds(pid)
        else:
            srv.settle(None, 0, fallback=2.0)
        for w in workers:
            w.send("go")
        sending.send("go")
        if collect([sending], "sent", deadline):
            fig["notes"].append("sender did not finish before --timeout")
        for w in workers:
            w.send("sender_done")
        late = collect(workers, "result", deadline)
        for w in late:
            w.send("report")
        if collect(late, "result", time.monotonic() + 10):
            raise BenchError("receiver processes did not report")
        if pid and (spawned is None or spawned.proc.poll() is None):
            fig["cpu1"] = srv.cpu_seconds(pid)
        if spawned and spawned.proc.poll() is not None:
            fig["notes"].append(f"server exited during the run, code {spawned.proc.returncode}")
    finally:
        if spawned:
            # Stop the server first: closing 1000 clients would make it announce 1000
            # departures to everyone left, which nobody measures.
            spawned.mark_log()
            spawned.stop()
        stop(workers + idle + ([sending] if sending else []))
    fig["receivers"] = [w.replies["result"] for w in workers]
    fig["sender"] = sending.replies.get("sent") if sending else None
    return fig


def summarize(args: argparse.Namespace, fig: dict[str, Any]) -> dict[str, Any]:
    """Turn raw worker replies into the reported figures."""
    res = fig["receivers"]
    snd = fig["sender"] or {}
    received = sum(r["received"] for r in res)
    expected = args.messages // args.rooms * args.receivers
    t_first = snd.get("t_first") or min((r["t_first"] for r in res if r["t_first"]), default=0)
    t_last = max((r["t_last"] for r in res), default=0)
    duration = (t_last - t_first) / 1e9 if received and t_last > t_first else 0.0
    lat = {LINE: array("q"), WS: array("q")}
    for r in res:
        lat[LINE].frombytes(r["lat_line"])
        lat[WS].frombytes(r["lat_ws"])
    out: dict[str, Any] = {
        "scenario": args.label
        or f"fanout {args.door} {args.receivers}r x{args.senders}s @{args.rate:g}/s"
        + (f" in {args.rooms} rooms" if args.rooms > 1 else "")
        + (f" beside {args.idle} idle" if args.idle else ""),
        "door": args.door,
        "receivers": args.receivers,
        "senders": args.senders,
        "rooms": args.rooms,
        "idle": fig.get("idle_open", 0),
        "messages": args.messages,
        "sent": snd.get("sent", 0),
        "rate": args.rate,
        "window": args.window if probe(args) else None,
        "procs": args.procs,
        "pinned": getattr(args, "pinned", None),
        "connect_s": round(fig.get("connect_s", 0), 2),
        "connect_failed": fig.get("connect_failed", 0),
        "disconnected": sum(r["disconnected"] for r in res) + snd.get("disconnected", 0),
        "expected": expected,
        "received": received,
        "lost": max(0, expected - received),
        "receivers_short": sum(r["short_conns"] for r in res),
        "duplicates": max(0, received - expected),
        "duration_s": round(duration, 3),
        "deliveries_per_s": round(received / duration) if duration else 0,
        "error_lines": sum(r["error_lines"] for r in res) + snd.get("error_lines", 0),
        "sender_status": snd.get("status", "missing"),
    }
    every = sorted(lat[LINE] + lat[WS])
    for key, values in (("", every), ("line_", sorted(lat[LINE])), ("ws_", sorted(lat[WS]))):
        if key and (args.door != "mixed" or not values):
            continue
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            out[f"{key}{name}_ms"] = round(percentile(values, q) / 1e6, 3)
        out[f"{key}max_ms"] = round((values[-1] if values else 0) / 1e6, 3)
    if "cpu1" in fig and received:
        cpu = fig["cpu1"] - fig["cpu0"]
        out["server_cpu_s"] = round(cpu, 3)
        out["server_us_per_delivery"] = round(cpu / received * 1e6, 2)
        out["server_core_share"] = round(cpu / duration, 2) if duration else None
    if "rss_conn_kb" in fig:
        conns = fig["open"] + fig.get("idle_open", 0) + args.senders + (1 if probe(args) else 0)
        out["rss_idle_mb"] = round(fig["rss_idle_kb"] / 1024, 1)
        out["rss_conn_mb"] = round(fig["rss_conn_kb"] / 1024, 1)
        out["rss_kb_per_conn"] = round((fig["rss_conn_kb"] - fig["rss_idle_kb"]) / conns, 2)
    gen = [(f"receivers-{i}", r["cpu"], r["wall"]) for i, r in enumerate(res)]
    if snd:
        gen.append(("sender", snd["cpu"], snd["wall"]))
    # Share of one core over the whole run (first send to last delivery): a process is a
    # bottleneck only if it was busy for most of the run, not for a short burst.
    shares = {
        name: round(cpu / (duration or wall), 2) if (duration or wall) > 0 else 0.0
        for name, cpu, wall in gen
    }
    out["generator_core_share"] = shares
    busy = [name for name, share in shares.items() if share >= BUSY]
    out["generator_bottleneck"] = busy
    ncpu = os.cpu_count() or 1
    if duration and "server_cpu_s" in out:
        total = out["server_cpu_s"] + sum(cpu for _, cpu, _ in gen)
        out["machine_cpu_share"] = round(total / duration / ncpu, 2)
    notes = list(fig["notes"])
    for r in res:
        notes += r["notes"]
    notes += snd.get("notes", [])
    out["notes"] = list(dict.fromkeys(notes))[:20]
    return out


def report(out: dict[str, Any]) -> str:
    """Human-readable summary of one run."""
    lines = [
        f"scenario     {out['scenario']}  (receiver procs: {out['procs']}"
        + ("" if out.get("pinned") is None else f"; server on CPU {out['pinned']} alone")
        + ")",
        f"connect      {out['receivers'] - out['connect_failed']} of {out['receivers']} "
        f"receivers in {out['connect_s']} s",
        f"deliveries   {fmt_num(out['received'])} of {fmt_num(out['expected'])} "
        f"in {out['duration_s']} s = {fmt_num(out['deliveries_per_s'])}/s  "
        f"(sent {out['sent']} of {out['messages']}: {out['sender_status']})",
        f"lost         {fmt_num(out['lost'])}"
        + (f" ({out['receivers_short']} receivers missed lines)" if out["lost"] else "")
        + (f", duplicates {out['duplicates']}" if out["duplicates"] else "")
        + f"; disconnects {out['disconnected']}; server error lines {out['error_lines']}",
        f"latency ms   p50 {out['p50_ms']}  p99 {out['p99_ms']}  max {out['max_ms']}",
    ]
    if "line_p50_ms" in out and "ws_p50_ms" in out:
        lines.append(
            f"  by door    line p50 {out['line_p50_ms']} p99 {out['line_p99_ms']} | "
            f"ws p50 {out['ws_p50_ms']} p99 {out['ws_p99_ms']}"
        )
    if "server_us_per_delivery" in out:
        lines.append(
            f"server CPU   {out['server_us_per_delivery']} us per delivery "
            f"({out['server_cpu_s']} s, {out['server_core_share']} of a core over the run)"
        )
    else:
        lines.append("server CPU   n/a (give --server-pid or --spawn)")
    if "rss_kb_per_conn" in out:
        lines.append(
            f"server RSS   {out['rss_idle_mb']} MB idle, {out['rss_conn_mb']} MB connected: "
            f"{out['rss_kb_per_conn']} KB per connection"
        )
    shares = ", ".join(f"{k} {v}" for k, v in out["generator_core_share"].items())
    lines.append(f"generator    share of a core: {shares}")
    if out["generator_bottleneck"]:
        lines.append(
            "WARNING      generator busy (" + ", ".join(out["generator_bottleneck"]) + "): "
            "figures are a lower bound for the server; try more --procs"
        )
    if out.get("machine_cpu_share", 0) >= 0.9:
        lines.append(
            f"WARNING      machine CPU {out['machine_cpu_share']:.0%} busy: server and "
            "generator compete for cores"
        )
    for note in out["notes"]:
        lines.append(f"note         {note}")
    return "\n".join(lines)


def exit_code(out: dict[str, Any]) -> int:
    clean = (
        not out["lost"]
        and not out["connect_failed"]
        and not out["disconnected"]
        and out["sender_status"] == "ok"
    )
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        addr = check_loopback(args.host)
    except ValueError as e:
        print(f"fanout: {e}", file=sys.stderr)
        return 2
    limit = srv.raise_nofile()
    if args.receivers + args.senders + 64 > limit:
        print(f"fanout: open-files limit {limit} is too low for this run", file=sys.stderr)
        return 2
    out = srv.run_scenario("fanout", args, addr, run, summarize, report)
    if out is None:
        return 2
    return exit_code(out)


if __name__ == "__main__":
    sys.exit(main())
