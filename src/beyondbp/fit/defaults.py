"""The fits' defaults that the command line shows in its help, in a module that imports nothing,
so that `beyondbp --help` and every `beyondbp train` process (one per study run) do not load SciPy."""
from __future__ import annotations

LND_BOOTSTRAP = 200  # bootstrap refits of an L(N, D) fit (each one an L-BFGS fit from the start grid)
BP_FLOPS_PER_PARAM_TOKEN = 6.0  # BP's training FLOPs per non-embedding parameter and token (6ND)
