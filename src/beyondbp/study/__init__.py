"""A grid of runs: the spec (`spec`, `slurm_settings`, the built-in specs in `presets`), the
plan (`plan`), the track registry (`tracks`: everything that differs between the Transformer and
MLP tracks, so nothing else tests a track's name), the study folder (`folder`) and the
executors (`local`, `slurm`). Spec validation, planning and the folder are torch-free; an
executor loads a track's trainer by name only when it trains.

May import: train (its schedule and run folder; never the loops), methods.catalogue, data,
model, atomic_write, config. Never report, bench or cli.
"""
