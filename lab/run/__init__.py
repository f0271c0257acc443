"""The run stage: a matrix (or one kernel) -> cell specs -> one guest boot per cell -> results.

`matrix` (lab.yaml) · `catalog` (the suites and tests, asked of suites/run.py)
· `prepare` (build the kernels and images a run needs, choose the rootfs, make
the cell specs) · `cellrun` (boot one cell, run its suites, collect its
results) · `checkout` (build and test one checkout: the judge bisect and try
share) · `progress` (what a run shows while it runs) · `reproduce` (a cell
again, from results.json). Module names avoid the words the code uses for
values (plan, cells, suites, commit), so a module never hides behind a local.
"""
