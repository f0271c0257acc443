"""landlock: udp."""

from __future__ import annotations

from landlock import suite

test = suite.test
