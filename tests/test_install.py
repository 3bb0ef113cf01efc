"""A plain (non-editable) install makes `twistd chatd`, `python -m chatd` and `chatd` available.

The new virtualenv sees the outer environment's already-installed dependencies through a
.pth file, so the test needs no network; it runs from tmp_path, so the source tree is not on
sys.path and only the installed copy can answer.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "dropin.cache", "chatd-data", "tests"
)


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_twistd_lists_chatd_after_a_plain_install(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the repo
    shutil.copytree(ROOT, source, ignore=SKIP)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    inner = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).strip()
    )
    outer = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    (inner / "outer.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-build-isolation", "--no-index", source, cwd=tmp_path,
    )  # fmt: skip

    twistd = console_script(venv, "twistd")

    where = run(python, "-c", "import chatd; print(chatd.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(inner)
    assert "chatd" in run(twistd, "--help", cwd=tmp_path).split()
    options = run(twistd, "chatd", "--help", cwd=tmp_path)
    assert "--line=" in options and "--config=" in options

    # python -m chatd and the chatd command pip wrote run the same service, same options.
    for command in ([python, "-m", "chatd"], [venv / "bin" / "chatd"]):
        usage = run(*command, "--help", cwd=tmp_path)
        assert usage.startswith("Usage: chatd ")
        assert "--line=" in usage and "--metrics=" in usage and "--config=" in usage
    wrong = subprocess.run(
        [venv / "bin" / "chatd", "--lines", "x"], cwd=tmp_path, capture_output=True, text=True
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("chatd: option --lines not recognized")

    server = subprocess.Popen(
        [venv / "bin" / "chatd", "--data-dir", tmp_path / "data", "--web", "none",
         "--line", "tcp:0:interface=127.0.0.1", "--minechat-read", "none",
         "--minechat-write", "none", "--irc", "none"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in server.stdout:
            seen.append(line)
            if "line: telnet 127.0.0.1 " in line or len(seen) > 50:
                break
        assert "line: telnet 127.0.0.1 " in seen[-1], "".join(seen)
    finally:
        server.terminate()
        server.wait(30)
    assert not (tmp_path / "twistd.pid").exists()  # no pid file: a supervisor knows the pid


def console_script(venv: Path, name: str) -> Path:
    """The script pip would write for Twisted's entry point, had Twisted been installed there."""
    (ep,) = entry_points(group="console_scripts", name=name)
    script = venv / "bin" / name
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {ep.module} import {ep.attr}\n"
        f"sys.exit({ep.attr}())\n"
    )
    script.chmod(0o755)
    return script
