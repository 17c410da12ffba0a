"""`beyondbp train`, `sample` and `methods`: one run, text from a run, the training methods."""
from __future__ import annotations

import argparse

from ..config import describe_keys
from .method_imports import add_opt_in


def keys_help() -> str:
    """Every configuration key with its default, for the epilog of the commands that take them."""
    lines = ["configuration keys (KEY=VALUE, dotted; defaults shown):"]
    lines += [f"  {key} = {value}" for key, value in describe_keys()]
    lines += ["  method.KEY = ...  the method's own settings: `beyondbp methods --settings` lists them",
              "A method's train_defaults (`beyondbp methods --settings`) sit between the built-in defaults",
              "and a config file's values; the command line overrides all."]
    return "\n".join(lines)


def cmd_train(args) -> int:
    from ..methods.run_builder import build_from_file
    from ..runs.folder import FINISHED
    from ..train.start import start_run
    cfg = build_from_file(args.config, args.overrides)
    summary = start_run(cfg, args.out)
    return 0 if summary is None or summary.get("status") in FINISHED else 1


def cmd_chain(args) -> int:
    from ..runs.folder import FINISHED
    from ..train.start import start_folder
    summaries = start_folder(args.trunk)
    return 0 if all((s or {}).get("status") in FINISHED for s in summaries.values()) else 1


def check_sample_flags(args) -> None:
    """The sample command's numbers, in the form every KEY=VALUE gets (`config.check_number`)."""
    from ..config import AT_LEAST_1, POSITIVE, RANGES, Range, check_number
    check_number("--tokens", args.tokens, Range(1, 10**7), integer=True)
    check_number("--temperature", args.temperature, POSITIVE)
    if args.top_k is not None:
        check_number("--top-k", args.top_k, AT_LEAST_1, integer=True)
    check_number("--seed", args.seed, RANGES["seed"], integer=True)


def cmd_sample(args) -> int:
    check_sample_flags(args)
    import torch
    from ..train.sample_run import load_run
    cfg, model, tokenizer = load_run(args.run)
    ids = tokenizer.encode(args.prompt) or [0]
    idx = torch.tensor([ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=gen)
    print(tokenizer.decode(out[0].tolist()))
    return 0


def cmd_methods(args) -> int:
    from ..methods.lookup import describe, installed, known_names  # built-in ones without importing torch
    for name in known_names():
        info = describe(name)
        origin = "" if info.module.startswith("beyondbp.") else f"  [{info.origin}, {_distribution(name, installed())}]"
        print(f"{name:13s} {info.summary}{origin}")
        if args.settings:
            for setting in info.settings:
                print(f"{'':15s}method.{setting.describe()}")
            for key, value in info.train_defaults.items():
                print(f"{'':15s}default {key} = {value}")
    return 0


def _distribution(name: str, entry_points: dict) -> str:
    """`package version` of the distribution whose entry point offers `name`."""
    dist = entry_points[name].dist if name in entry_points else None
    return f"{dist.name} {dist.version}" if dist is not None else "unknown package"


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run", epilog=keys_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument("--config", help="YAML file with a run config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_opt_in(p)
    p.set_defaults(func=cmd_train)


def add_chain_parser(sub) -> None:
    p = sub.add_parser("chain", help="train a trunk and its budget branches (what `study run` starts with "
                                     "budgets: branched)")
    p.add_argument("trunk", help="the trunk's folder (DIR/trunks/NAME, holding run.yaml and chain.yaml)")
    add_opt_in(p)
    p.set_defaults(func=cmd_chain)


def add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a run's checkpoint")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    add_opt_in(p)
    p.set_defaults(func=cmd_sample)


def add_methods_parser(sub) -> None:
    p = sub.add_parser("methods", help="list the training methods (built-in and installed)")
    p.add_argument("--settings", action="store_true", help="also list each method's settings and training defaults")
    p.set_defaults(func=cmd_methods)
