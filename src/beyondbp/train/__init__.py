"""One run: the torch-free step schedule (`schedule`), the optimizer step every trainer takes
(`step`), the Transformer loop (`loop`) and the MLP track's epoch loop (`mlp_loop`,
`mlp_outputs`), distributed set-up, memory preflight, alignment measurement, checkpoints, and
the run folder's contract (`run_folder`: its files, statuses, lock, failed summary, compute
columns and metrics reading, torch-free; studies and reports read run folders only through it).

May import: methods, data, model, atomic_write, config. Never study, report, bench or cli.
"""
