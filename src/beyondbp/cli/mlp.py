"""`beyondbp mlp`: the fully-connected track from the command line.

    beyondbp mlp --out runs/digits method=all        # BP, FA and DFA side by side
    beyondbp mlp --out runs/fa method=fa mlp.depth=3 mlp.width=256 mlp.epochs=20
"""
from __future__ import annotations

import argparse

from .method_imports import add_opt_in


def cmd_mlp(args) -> int:
    from ..methods.run_builder import build_from_file
    from ..runs.folder import FINISHED
    from ..train.start import start_run  # torch loads only when the run starts
    summary = start_run(build_from_file(args.config, args.overrides, kind="mlp", unresolved=("all",)), args.out)
    return 0 if summary.get("status") in FINISHED else 1


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "mlp", help="train MLP classifiers (digits, MNIST) with BP/FA/DFA and compare alignment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="keys: method (bp | fa | dfa | shallow | all), seed, mlp.depth, mlp.width, "
               "mlp.activation (tanh | relu | sigmoid), mlp.epochs, train.lr, train.weight_decay, mlp.batch_examples, "
               "mlp.dataset (digits | mnist | fashion_mnist); see `beyondbp train --help` for all keys.\n"
               "MLP defaults: train.lr=1e-3, train.beta2=0.999, train.weight_decay=3 (AdamW), 20 epochs.\n"
               "method=all trains bp, fa and dfa into OUT/bp, OUT/fa, OUT/dfa and writes "
               "OUT/comparison.md and OUT/angles.png.")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--config", help="YAML file with a run config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_opt_in(p)
    p.set_defaults(func=cmd_mlp)
