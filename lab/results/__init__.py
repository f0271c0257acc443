"""Results: what a run found, read once into types, and every report written from them.

`model` (TestResult, CellResult, how the guest's outputs become them) ·
`consolelog` (the kernel report table over a recorded console) · `ktap` ·
`signature` (a stable name for how something failed) · `knownfail` ·
`store` (results.json) · `compare` (two runs) · `summary`, `junit`, `html`
(text, JUnit XML, report.html) · `write` (a run's results dir, every file).
Nothing here boots or builds: the package reads and writes data only.
"""
