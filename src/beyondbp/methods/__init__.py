"""How gradients are made: one file per training method, the registry that builds them, and the
torch-free catalogue that names them.

A method is a `base.TrainingMethod` subclass in its own module here, decorated with
`registry.register`; `catalogue` reads its name, summary, model kinds and settings from the
source without importing torch (spec validation, `study plan`, `study report` and `beyondbp
methods` use it), `registry` imports it to train. `feedback` holds DFA's fixed random
projections. May import: config, model (the GPT's blocks). Never data, train, study or above.
"""
