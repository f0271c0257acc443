"""The kernel stage: source tree + kconfig fragments -> a proven .config -> a build dir with build.json.

`source` (Debian's linux-source packages, or a tree of the user's) ·
`kconfig` (fragments: parse, resolve for a tree, merge, prove they landed) ·
`explain` (why an option did not land, read from the tree's Kconfig) ·
`build` (configure and compile in a content-keyed build dir) ·
`record` (build.json: what later stages read of a finished build).
"""
