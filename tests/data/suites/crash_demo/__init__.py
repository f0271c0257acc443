"""A test-only suite that crashes the kernel on purpose, for `--dump-on-failure`.

Not one of the lab's suites: suites/run.py lists it only with --suite-dir
tests/data/suites. Its one test panics the guest through sysrq, as a kernel
bug would: the cell must report the panic and, when asked, keep the memory.
"""

from __future__ import annotations

import _klab

suite = _klab.Suite("crash_demo")


@suite.test
def sysrq_crash_panics_the_kernel() -> None:
    """Never returns: the kernel panics (and the lab must say so, and dump the memory when asked)."""
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("c")
    raise _klab.Failure("the kernel survived a sysrq crash")
