"""Counting instructions: a bench module run under C{valgrind --tool=callgrind}.

Wall-clock and even CPU time are noisy on a shared machine; an instruction count is not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def count(module_args: list[str], threads: bool = False) -> list[int]:
    """User-space instructions of C{python -m <module_args>} under callgrind: one total, or
    with C{threads} one per thread, the main (reactor) thread's first."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += ["--separate-threads=yes"] if threads else []
        cmd += [sys.executable, "-m", *module_args]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        totals = []
        for name in sorted(os.listdir(tmp)):  # with threads: callgrind.out-01, -02, ...
            with open(os.path.join(tmp, name)) as f:
                found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
            if found:
                totals.append(int(found.group(1)))
        if not totals:
            raise SystemExit(f"callgrind wrote no totals for {' '.join(cmd)}")
        return totals
