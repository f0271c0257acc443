"""The machine: the accelerator, QEMU boot plans and processes, the live console, commands and sessions."""
