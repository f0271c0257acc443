"""Scale-out on LAVA: `definition` (a cell as a LAVA job, and a local device dictionary for lava-run)
and `readback` (LAVA's results back into the lab's results)."""
