"""Run every scenario the project reports, each against a fresh server, as a markdown table.

    python -m bench.all [--quick] [--twistd /path/to/venv/bin/twistd]

Each scenario is its own `--spawn` run in a child process, so one cannot warm up or
pollute the next; their own reports go to stderr, the table to stdout. The floor
(bench.floor: a bare loop of one send() per receiver) runs the 50 msg/s fan-outs too, in
the same run, and the table gives chatd's CPU per delivery divided by it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a module and its arguments (sizes divided by 10 for --quick)."""

    name: str
    module: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    timeout: float
    floor: Scenario | None = None  # the same load against bench.floor, for the ratio


def fanout(receivers: int, door: str, rate: int, messages: int, quick_messages: int) -> Scenario:
    """A bench.fanout row with one sender; --quick has a tenth of the receivers."""

    def argv(receivers: int, messages: int) -> tuple[str, ...]:
        return ("--door", door, "--receivers", str(receivers), "--rate", str(rate),
                "--messages", str(messages))  # fmt: skip

    pace = f"1 sender, {rate} msg/s" if rate else "flat out"
    shown = {"ws": "WebSocket", "irc": "IRC"}.get(door, door)
    name = f"{receivers} {shown} receivers, {pace}"
    full, quick = argv(receivers, messages), argv(receivers // 10, quick_messages)
    # The floor is one send() per receiver per message: a figure for a paced load, where
    # chatd too sends each message on its own (flat out, chatd sends several at once).
    floor = Scenario(f"floor: {name}", "bench.floor", full, quick, 600) if rate else None
    return Scenario(name, "bench.fanout", full, quick, 600, floor)


def rooms(count: int, size: int, rate: int, messages: int, idle: int = 0) -> Scenario:
    """A bench.fanout row with receivers spread over rooms and a sender per room, posting
    round-robin, beside C{idle} silent connections; --quick has a tenth of the rooms. Its
    floor is the same load against the bare send loop (which keeps rooms too)."""

    def argv(count: int, messages: int, idle: int) -> tuple[str, ...]:
        return ("--door", "line", "--receivers", str(count * size), "--rooms", str(count),
                "--rate", str(rate), "--messages", str(messages), "--idle", str(idle),
                "--procs", "2")  # fmt: skip

    name = (
        f"{count} rooms of {size} line receivers, {count} senders, {rate} msg/s in all"
        if count > 1
        else f"{size} line receivers, 1 sender, {rate} msg/s (one room)"
    ) + (f", beside {idle:,} idle" if idle else "")
    full, quick = argv(count, messages, idle), argv(max(1, count // 10), messages // 10, idle // 10)
    floor = Scenario(f"floor: {name}", "bench.floor", full, quick, 900)
    return Scenario(name, "bench.fanout", full, quick, 900, floor)


SCENARIOS = [
    fanout(1000, "line", 50, 500, 100),
    fanout(1000, "ws", 50, 500, 100),
    fanout(1000, "irc", 50, 500, 100),
    fanout(500, "line", 0, 10000, 1000),
    fanout(500, "ws", 0, 10000, 1000),
    # Rooms: each message reaches 50 people. The one-room row with the same 50 people per
    # message and deliveries/s is what its CPU per delivery compares with; beside 4,950
    # idle connections, it holds as many sockets as the 100 rooms.
    rooms(1, 50, 50, 2000),
    rooms(1, 50, 50, 2000, idle=4950),
    rooms(100, 50, 50, 2000),
    Scenario(
        "10,000 idle connections, half line, half WebSocket",
        "bench.idle",
        ("--door", "mixed", "--connections", "10000"),
        ("--door", "mixed", "--connections", "1000"),
        1800,
    ),
    Scenario(
        "10,000 connecting at once (reconnect storm), half line, half WebSocket",
        "bench.storm",
        ("--door", "mixed", "--connections", "10000"),
        ("--door", "mixed", "--connections", "1000"),
        900,
    ),
]


def run_one(sc: Scenario, quick: bool, extra: list[str]) -> tuple[int, dict[str, Any] | None]:
    """Run a scenario in a child process; its report goes to our stderr."""
    with tempfile.TemporaryDirectory(prefix="chatd-bench-all-") as tmp:
        out = Path(tmp) / "result.json"
        label = f"{sc.name} (quick: 1/10)" if quick else sc.name
        cmd = [sys.executable, "-m", sc.module, "--spawn", "--label", label]
        cmd += list(sc.quick if quick else sc.args) + ["--json", str(out)] + extra
        cmd += ["--timeout", str(sc.timeout)]
        print(f"\n## {sc.name}\n$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        try:
            code = subprocess.run(
                cmd, cwd=REPO, stdout=sys.stderr, timeout=sc.timeout + 120
            ).returncode
        except subprocess.TimeoutExpired:
            return 2, None
        if not out.exists():
            return code or 2, None
        return code, json.loads(out.read_text())


def ms(out: dict[str, Any]) -> str:
    return f"{out['p50_ms']:.1f} / {out['p99_ms']:.1f} / {out['max_ms']:.1f}"


def ratio(out: dict[str, Any] | None, floor: dict[str, Any] | None) -> str:
    """chatd's CPU per delivery divided by the floor's, as the table shows it."""
    try:
        return f"{out['server_us_per_delivery'] / floor['server_us_per_delivery']:.2f}"  # type: ignore[index]
    except (TypeError, KeyError, ZeroDivisionError):
        return ""


def row(sc: Scenario, code: int, out: dict[str, Any] | None, vs_floor: str = "") -> str:
    """One markdown table row; failed runs still get a row saying so."""
    if out is None:
        return f"| {sc.name} | did not run (exit {code}) | | | | | | |"
    name = out["scenario"]
    notes = []
    if out.get("generator_bottleneck"):
        notes.append("generator busy: " + ", ".join(out["generator_bottleneck"]))
    if out.get("machine_cpu_share", 0) >= 0.9:
        notes.append(f"machine CPU {out['machine_cpu_share']:.0%}")
    if out.get("connect_failed"):
        notes.append(f"{out['connect_failed']} connects failed")
    if out.get("disconnected") or out.get("dropped_while_idle"):
        notes.append(f"{out.get('disconnected') or out.get('dropped_while_idle')} dropped")
    if out.get("error_lines"):
        notes.append(f"{out['error_lines']} error lines")
    if out.get("server_log_problems"):
        notes.append(f"{out['server_log_problems']} server log warnings/errors")
    if out.get("server_killed"):
        notes.append("server needed SIGKILL to stop")
    rss = out.get("rss_kb_per_conn", "n/a")
    if "received" in out:
        cpu = out.get("server_us_per_delivery", "n/a")
        share = out.get("server_core_share")
        if share is not None:
            notes.append(f"server {share:.0%} of a core")
        lost = f"{out['lost']:,} of {out['expected']:,}"
        return (
            f"| {name} | {out['deliveries_per_s']:,} | {ms(out)} | {lost} | {cpu} | {vs_floor} "
            f"| {rss} | {'; '.join(notes)} |"
        )
    if "all_greeted_s" in out:
        notes.insert(
            0,
            f"{out['greeted']:,} greeted, the last after {out['all_greeted_s']} s; "
            f"{out.get('server_ms_per_connect', 'n/a')} ms server CPU per connect",
        )
    else:
        notes.insert(
            0,
            f"{out['open']:,} open in {out['connect_s']} s (+{out['settle_s']} s busy), "
            f"{out.get('server_ms_per_connect', 'n/a')} ms server CPU per connect",
        )
    return f"| {name} | | | | | | {rss} | {'; '.join(notes)} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tenth of the sizes, to try it out")
    p.add_argument("--only", help="run only scenarios whose name contains this text")
    p.add_argument("--twistd", help="twistd of the venv where chatd is installed")
    p.add_argument("--server-cmd", help="passed on to every scenario (see bench.fanout -h)")
    p.add_argument("--procs", type=int, help="generator processes for every scenario")
    args = p.parse_args(argv)
    extra: list[str] = []
    if args.twistd:
        extra += ["--twistd", args.twistd]
    if args.server_cmd:
        extra += ["--server-cmd", args.server_cmd]
    if args.procs:
        extra += ["--procs", str(args.procs)]
    extra_floor = ["--procs", str(args.procs)] if args.procs else []  # no chatd to start
    chosen = [s for s in SCENARIOS if not args.only or args.only.lower() in s.name.lower()]
    if not chosen:
        p.error(f"no scenario matches {args.only!r}")
    started = time.strftime("%Y-%m-%d %H:%M")
    rows = []
    worst = 0
    for sc in chosen:
        if sc.floor is not None:  # just before chatd, so both meet the same machine
            floor_code, floor_out = run_one(sc.floor, args.quick, extra_floor)
            worst = max(worst, floor_code)
        code, out = run_one(sc, args.quick, extra)
        worst = max(worst, code)
        vs_floor = ratio(out, floor_out) if sc.floor is not None else ""
        rows.append(row(sc, code, out, vs_floor))
        if sc.floor is not None:
            rows.append(row(sc.floor, floor_code, floor_out))
    print(f"\nMachine: {machine()}; run {started}{' (--quick)' if args.quick else ''}\n")
    print(
        "| scenario | deliveries/s | latency ms p50 / p99 / max | lost | "
        "server CPU us/delivery | ÷ floor | server RSS KB/conn | notes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    return worst


if __name__ == "__main__":
    sys.exit(main())
