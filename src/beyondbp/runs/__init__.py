"""A run as files on disk, torch-free: the run folder's contract (`folder`: its files, states,
lock, failed summary, compute columns), the compute accountings it records (`accounting`), its
metrics rows and summary checks (`records`), the step schedule (`schedule`), branch points of a
chain of budgets (`chain`) and the torchrun environment checks (`dist_env`).

Below `train`, `study` and `report`: the trainers write run folders through it, and the
executors and the report read them through it without loading the training room or torch.

May import: atomic_write, config, reads. Never torch, train, methods, study, report or cli.
"""
