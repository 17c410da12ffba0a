"""The fits' defaults that the command line shows in its help, in a module that imports nothing,
so that `beyondbp --help` and every `beyondbp train` process (one per study run) do not load SciPy."""
from __future__ import annotations

DEFAULT_BOOTSTRAP = 2000  # bootstrap samples of a frontier fit and its verdict
RUN_FRACTION = 0.5  # learning curves: a run's points count from half its own budget on
LND_BOOTSTRAP = 2000  # bootstrap refits of an L(N, D) fit, warm-started: ~5-10 s per method of 50 runs on 2 cores
BP_FLOPS_PER_PARAM_TOKEN = 6.0  # BP's training FLOPs per non-embedding parameter and token (6ND)
HORIZON_FACTOR = 10.0  # a letter is claimed through this multiple of the largest compute measured
EXTRAPOLATION_LIMIT_DECADES = 0.3  # a multiplier read further outside the runs' compute: model error counts
