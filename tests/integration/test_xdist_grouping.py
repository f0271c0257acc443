"""The guest tests rely on xdist keeping a class on one worker (--dist loadscope), so a cell boots once.

pytest-xdist's `loadgroup` silently stopped grouping with pytest 9.2.0 +
xdist 3.8.0 (xdist issue 1386): this runs a real xdist session over classes
shaped like the guest cells and checks each class-scoped "boot" ran once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULE = """
import os, pytest
LOG = {log!r}

def _make(name):
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def booted(cls):
        with open(LOG, "a") as f:
            f.write(f"{{name}} {{os.getpid()}}\\n")

    @pytest.mark.parametrize("n", range(6))
    def test_item(self, n):
        pass

    return type(f"TestCell_{{name}}", (), {{"booted": booted, "test_item": test_item}})

for _n in ("x86_64", "arm64", "nobpf"):
    globals()[f"TestCell_{{_n}}"] = _make(_n)
"""


def test_loadscope_boots_each_class_once(tmp_path: Path) -> None:
    log = tmp_path / "boots.log"
    (tmp_path / "test_cells.py").write_text(MODULE.format(log=str(log)))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadscope",
            str(tmp_path / "test_cells.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "18 passed" in run.stdout
    boots = log.read_text().split("\n")[:-1]
    names = sorted(line.split()[0] for line in boots)
    assert names == ["arm64", "nobpf", "x86_64"], boots
