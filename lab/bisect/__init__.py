"""`klab bisect`: find the commit that broke a suite test, with `git bisect run` in the user's own tree.

The driver (`drive`) checks the inputs, proves the endpoints (good passes, bad
fails), then lets `git bisect run` call one step per commit (`python -m
lab.bisect --state FILE`, `step`). Every step rebuilds in the same build dir
(the build dir of a git tree is keyed by its path, so each step is
incremental), boots once and runs only the selected tests, and `verdict`
turns the results into git's answer. Everything a step leaves lies in one
work dir; `bisect.log` there lets a rerun of the same command resume with
`git bisect replay` (`tree` keeps the log and puts the user's tree back).
`report` says what was found.
"""

from __future__ import annotations
