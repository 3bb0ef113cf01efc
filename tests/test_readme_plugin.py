"""The README's plugin example, run as written: the dice command and its chatd.testing test."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _block_after(marker: str) -> str:
    """The first ```python block after C{marker} in the README."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index(marker) :]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, f"no python block after {marker!r}"
    return match.group(1)


def test_the_readme_plugin_and_its_test_work_as_written(tmp_path, monkeypatch) -> None:
    (tmp_path / "dice").mkdir()
    (tmp_path / "dice" / "__init__.py").write_text(_block_after("`dice/__init__.py`:"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dice", raising=False)
    namespace: dict[str, object] = {}
    exec(compile(_block_after("`tests/test_dice.py`:"), "test_dice.py", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert tests, "the README's test has no test function"
    for test in tests:
        test()
