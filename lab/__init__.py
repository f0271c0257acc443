"""kernel-lab: build, boot and test Linux kernels for the security modules."""

__version__ = "0.1.0"
