"""landlock: no_new_privs."""

from __future__ import annotations

from landlock import suite

test = suite.test
