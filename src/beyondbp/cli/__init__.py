"""The command line: `main` holds one static table from sub-command to the module that parses
it (`train`, `study`, `data`, `fit`, `mlp`, `bench`); each front-end checks its flags and calls
the room that does the work. Heavy rooms (torch) are imported inside the command that needs
them, so `beyondbp --help`, `study plan|status|report`, `fit` and `methods` start without torch.

May import: every room. Nothing imports cli.
"""
