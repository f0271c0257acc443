"""Run the in-guest landlock suite directly on this host and check its verdicts.

The suite must pass or skip (with a reason) on any correct kernel, so a run on
the development host is a cheap end-to-end check of the suite itself.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest

from tests.integration.host_suites import assert_clean, run_suite

_NR_LANDLOCK_CREATE_RULESET = 444  # same number on x86_64 and aarch64
_LANDLOCK_CREATE_RULESET_VERSION = 1


def _landlock_abi() -> int:
    """The host's Landlock ABI version, or a negative errno when Landlock is unusable."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(_NR_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return ret if ret >= 0 else -ctypes.get_errno()


def _skip_unless_usable() -> None:
    if sys.platform != "linux":
        pytest.skip("the landlock suite runs on Linux only")
    if os.geteuid() != 0:
        pytest.skip("the landlock suite needs root (it drops capabilities itself)")
    abi = _landlock_abi()
    if abi < 0:
        pytest.skip(f"Landlock is not usable on this host ({os.strerror(-abi)})")


@pytest.mark.host
def test_landlock_suite_passes_on_host(tmp_path: Path) -> None:
    _skip_unless_usable()
    assert_clean(run_suite("landlock", tmp_path))
