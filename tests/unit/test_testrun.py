"""A cell's results count only when the guest ran the kernel the lab built (its `uname -v`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import arches
from lab.kernel.record import BuildManifest
from lab.run import cellrun
from tests.unit.test_reproduce import fake_build

BUILT = "#17 SMP Mon Nov 30 23:38:46 UTC 2026"


def _build(tmp_path: Path, uts_version: str | None) -> BuildManifest:
    build = fake_build(tmp_path, "x86_64-linux-6.12-aaaa", b"HdrS kernel")
    if uts_version is not None:
        header = build.build_dir / "include/generated/utsversion.h"
        header.parent.mkdir(parents=True)
        header.write_text(f'#define UTS_VERSION "{uts_version}"\n')
    return build


def _spec(build: BuildManifest | None) -> cellrun.CellSpec:
    return cellrun.CellSpec("x86_64.6.12.default", arches.get("x86_64"), Path("bzImage"), "host", (), build=build)


def test_the_builds_uname_v_comes_from_its_generated_header(tmp_path: Path) -> None:
    assert _build(tmp_path, BUILT).uts_version() == BUILT
    assert _build(tmp_path / "gone", None).uts_version() == ""


def test_a_guest_running_another_kernel_is_a_lab_error_naming_both(tmp_path: Path) -> None:
    """The stale piggy.o of a ccache depend-mode build booted build #22 in place of #17: caught here."""
    build = _build(tmp_path, BUILT)
    error = cellrun._not_the_built_kernel(_spec(build), "#22 SMP Mon Nov 30 23:34:59 UTC 2026")
    assert "'#22 SMP Mon Nov 30 23:34:59 UTC 2026'" in error and f"'{BUILT}'" in error
    assert str(build.build_dir) in error and "stale" in error


@pytest.mark.parametrize(
    ("header", "booted", "with_build"),
    [
        (BUILT, BUILT, True),  # the kernel it built
        (BUILT, "", True),  # an older guest.json without kernel_version: nothing to compare
        (None, "#22 SMP", True),  # the build dir lost its header: nothing to compare
        (BUILT, "#22 SMP", False),  # a kernel image given by path, not a lab build
    ],
)
def test_nothing_to_say_when_it_is_the_built_kernel_or_unknowable(
    tmp_path: Path, header: str | None, booted: str, with_build: bool
) -> None:
    spec = _spec(_build(tmp_path, header) if with_build else None)
    assert cellrun._not_the_built_kernel(spec, booted) == ""
