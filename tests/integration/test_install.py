"""A non-editable install (pip install ., pipx) finds its fragments, suites, image recipes and lab.yaml.

The wheel is built from this checkout and installed into a directory of its
own; the interpreter then runs without site processing (-S), so neither the
checkout nor the development install's editable finder can stand in for it.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lab.paths import REPO_ROOT

pytestmark = pytest.mark.host

CHECK = """
import sys
from pathlib import Path
from lab import paths
from lab.run import matrix
from lab.run import catalog
from lab.image import recipes
from lab.kernel import kconfig
home = Path(sys.argv[1])
assert paths.HOME == home / "lab" / "home", paths.HOME
assert kconfig.find_fragment("bpf-lsm").is_relative_to(home)
assert recipes.find_recipe(recipes.DEFAULT_RECIPE).is_relative_to(home)
assert catalog.all_suites() == ("landlock", "landlock_ptrace", "bpf_lsm", "seccomp"), catalog.all_suites()
assert len(catalog.planned_tests(("landlock",))) > 100
mtx = matrix.load(paths.HOME / "lab.yaml")
assert mtx.known_failures and Path(mtx.known_failures).is_file()
assert (paths.HOME / "lab" / "guest" / "init").is_file() and (paths.HOME / "lab" / "guest" / "bootstrap").is_file()
print("ok", len(mtx.cells()))
"""


def test_a_wheel_install_carries_the_labs_home(tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    subprocess.run([*pip, str(REPO_ROOT)], check=True, capture_output=True, timeout=600)
    assert not (target / "lab" / "home" / "suites").is_symlink(), "the wheel must carry copies, not links"
    deps = sysconfig.get_paths()["purelib"]  # pexpect, yaml, rich... from the development environment
    env = {"PYTHONPATH": f"{target}:{deps}", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-S", "-c", CHECK, str(target)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok ")
    helped = subprocess.run(
        [sys.executable, "-S", "-m", "lab", "test-kernel", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert helped.returncode == 0 and "example: klab test-kernel" in helped.stdout
