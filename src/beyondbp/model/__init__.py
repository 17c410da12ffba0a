"""What is trained: the GPT (`gpt`), the MLP track's classifier (`mlp`), `build_model` for any
`model.kind` (`build`), the one loss both share (`loss`), the parts both show the training
methods with the forward pass they make up (`parts`), and a model's shape, parameter and
FLOP counts without building it (`shape`, torch-free: planning and compute accounting read it).

May import: config. Nothing else of the package (methods, train and bench import this room).
"""
