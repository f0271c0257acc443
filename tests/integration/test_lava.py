"""Real LAVA jobs: `klab lava job` for the lab's 6.12 kernels, one per arch, run by Debian's `lava-run`, results back.

One job, kept short under TCG (a few seccomp tests and the BPF LSM canary):
the boot drops `bpf` from lsm=, as lab.yaml's `nobpf` boot does, so the canary
really fails and the job carries both verdicts through lava-test-case. The
kernel and the guest image come from the lab's caches (built once, reused).
`make setup-lava` installs lava-run; where it is absent this test skips.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from lab import arches, proc
from lab.cli import main as klab
from lab.image import build, recipes
from lab.lava import readback
from lab.paths import REPO_ROOT
from lab.results import model, store
from lab.run import matrix, prepare

pytestmark = [pytest.mark.lava, pytest.mark.kernel]

LAVA_RUN = shutil.which("lava-run")
PATTERNS = ("seccomp.reject_empty", "seccomp.reject_byte_load", "bpf_lsm.canary_counts_file_open")
EXPECTED = {
    ("seccomp", "reject_empty"): model.Status.PASS,
    ("seccomp", "reject_byte_load"): model.Status.PASS,
    ("bpf_lsm", "canary_counts_file_open"): model.Status.FAIL,
}
NOBPF = "lsm=landlock,lockdown,yama"
JOB_SECONDS = 600


@pytest.fixture(scope="module", params=["x86_64", "arm64"])
def lava_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate the job with the CLI, run it with lava-run; the dir holds job.yaml, device.yaml, lava.log."""
    if LAVA_RUN is None:
        pytest.skip("lava-run not installed (Debian package lava-dispatcher): run `make setup-lava`")
    if os.geteuid() != 0:
        pytest.skip("lava-run must run as root")
    arch = arches.get(request.param)
    kernel = matrix.load(REPO_ROOT / "lab.yaml").kernels[0]
    doc = prepare.build_kernel(prepare.source_path(kernel.source), arch, kernel.fragments)
    image = build.build_image(arch, recipes.find_recipe(recipes.DEFAULT_RECIPE)).image
    work = tmp_path_factory.mktemp("lava")
    job, device = work / "job.yaml", work / "device.yaml"
    argv = ["lava", "job", "--arch", arch.name, "--build", str(doc.build_dir)]
    argv += ["--rootfs", image, "--suite", "seccomp", "--suite", "bpf_lsm", "--append", NOBPF, "--out", str(job)]
    argv += [arg for p in PATTERNS for arg in ("-k", p)]
    assert klab(argv) == 0
    assert klab(["lava", "device", "--arch", arch.name, "--out", str(device)]) == 0
    # Job ids name dirs under /var/lib/lava/dispatcher/tmp: unique per run so parallel sessions never share one.
    job_id = str(int(time.time() * 1000) % 10**9)
    out = work / "out"
    start = time.monotonic()
    proc.run(
        [LAVA_RUN, "--job-id", job_id, "--output-dir", str(out), "--device", str(device), str(job)],
        deadline=proc.Deadline.after(JOB_SECONDS),
        log=work / readback.LOG_NAME,
        check=False,
    )
    print(f"lava-run took {time.monotonic() - start:.1f}s")
    return work


def test_job_definition_is_what_lava_accepts(lava_run: Path) -> None:
    job = yaml.safe_load((lava_run / "job.yaml").read_text())
    assert job["device_type"] == "qemu"
    assert [next(iter(a)) for a in job["actions"]] == ["deploy", "boot", "test"]
    assert yaml.safe_load((lava_run / "out" / "result.yaml").read_text())["result"] == "pass", (
        lava_run / readback.LOG_NAME
    ).read_text()[-4000:]


def test_per_test_results_come_back(lava_run: Path) -> None:
    out = lava_run / "results"
    status = klab(["lava", "results", "--lava-results", str(lava_run), "--out", str(out)])
    assert status == 1  # the canary failed, as it must with bpf missing from lsm=
    (cell,) = store.load_cells(out / "results.json")
    got = {(t.suite, t.name): t.status for t in cell.tests}
    assert got == EXPECTED, got
    arch = yaml.safe_load((lava_run / "job.yaml").read_text())["context"]["arch"]
    assert cell.id.startswith(f"{arch}.6.12") and cell.accel == "tcg" and not cell.error
    assert cell.kernel_release.startswith("6.12")
    assert all(t.duration > 0 for t in cell.tests)
    junit = (out / "junit.xml").read_text()
    assert 'name="canary_counts_file_open"' in junit and "<failure" in junit
    assert (out / f"console-{cell.id}.log").read_text().count("klab-lava-init: payload unpacked") == 1
