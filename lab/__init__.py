"""kernel-lab: build, boot and test Linux kernels for the security modules.

The data flows one way, one package per stage: `kernel` (source + fragments
-> a build dir) -> `image` (a guest rootfs) -> `vm` (QEMU, the console, a
command or a session in the guest) -> `run` (matrix -> cells -> one boot per
cell) -> `results` (the typed model and every report). Above the stages sit
the workflows (`bisect`, `series` for `klab try`, `lava`) and `cli`, the only
place that turns errors into exit codes. The toolbox at the top serves all:
`errors`, `proc`, `paths`, `atomic`, `manifest`, `yamlfile`, `arches`,
`debian`, `git`. `guest/` is the guest's init; `home/` lets a wheel carry
the lab's fragments, suites, recipes and lab.yaml.
"""

__version__ = "0.1.0"
