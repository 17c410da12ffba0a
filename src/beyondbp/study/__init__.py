"""A grid of runs: the spec (`spec`, `slurm_settings`, the built-in specs in `presets`), the
plan (`plan`), the track registry (`tracks`: everything that differs between the Transformer and
MLP tracks, so nothing else tests a track's name), the study folder (`folder`), branched
budgets (`chain`) and the executors (`local_executor`, `slurm`). Spec validation, planning and
the folder are torch-free; an executor loads a track's trainer by name only when it trains.

May import: runs (the run folder, schedule and branch points), train (memory and tracking
checks; never the loops), methods (catalogue, lookup, import policy), data, model, atomic_write,
config. Never report, bench or cli.
"""
