"""The image stage: a recipe (images/*.yaml) -> a Debian ext4 guest image with image.json, cached by content.

`recipes` (the recipe schema and its loader) · `hostprep` (what the host
needs first: root, mmdebstrap, qemu-user under binfmt_misc) · `build`
(mmdebstrap into a directory, `mke2fs -d`, no loop mounts).
"""
