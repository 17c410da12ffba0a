"""One run: the optimizer step every trainer takes (`step`), the Transformer loop (`loop`) and
the MLP track's epoch loop (`mlp_loop`, `mlp_outputs`), distributed set-up, memory preflight,
alignment measurement, checkpoints and their provenance, a chain of branched budgets (`chain`),
and live tracking (`tracking`: each metrics row to TensorBoard or W&B, imported only when
chosen). The run folder it writes is `runs`' contract.

May import: runs, methods, data, model, atomic_write, config. Never study, report, bench or cli.
"""
