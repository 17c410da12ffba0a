"""Command line: parse, then call the modules that do the work.

Every user-facing failure prints one line `beyondbp: error: ...` naming the bad field, file
or value, and exits with status 2; an interrupted run exits with 130 after checkpointing.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError, describe_keys


def _keys_help() -> str:
    lines = ["configuration keys (KEY=VALUE, dotted; defaults shown):"]
    lines += [f"  {key} = {value}" for key, value in describe_keys()]
    return "\n".join(lines)


def cmd_train(args) -> int:
    from ..config import build_config
    from ..train.memory import check_state_fits_host
    from ..train.run_folder import check_out_path
    cfg = build_config(args.config, args.overrides)
    check_out_path(args.out)
    check_state_fits_host(cfg)  # a model far too big for this machine: refused before torch loads
    from ..train.loop import train
    summary = train(cfg, args.out)
    return 0 if summary is None or summary.get("status") in ("completed", "diverged") else 1


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
    from ..train.loop import load_run
    cfg, model, tokenizer = load_run(args.run)
    ids = tokenizer.encode(args.prompt) or [0]
    idx = torch.tensor([ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=gen)
    print(tokenizer.decode(out[0].tolist()))
    return 0


def cmd_methods(args) -> int:
    from ..methods.registry import available
    for name, cls in available().items():
        print(f"{name:10s} {cls.summary}")
    return 0


def cmd_fit(args) -> int:
    from ..fit.points import fit_cli
    return fit_cli(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beyondbp", description="Scaling laws beyond backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run", epilog=_keys_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument("--config", help="YAML file with a run config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a run's checkpoint")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("methods", help="list the training methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("fit", help="fit compute-optimal frontiers to a CSV of points", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_fit)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


_EXTRA_COMMANDS: list = []


def _register_extra_commands() -> None:
    """Subcommands that live beside their modules (study, mlp, bench, data), when present."""
    import importlib
    if _EXTRA_COMMANDS:
        return
    for module in ("study", "mlp", "bench", "data"):
        try:
            mod = importlib.import_module(f".{module}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
            continue
        if mod.add_parser not in _EXTRA_COMMANDS:  # main() may run more than once in a process
            _EXTRA_COMMANDS.append(mod.add_parser)


def _say(message: str) -> None:
    """Print one line to stderr in a single write, so lines from several ranks never interleave."""
    sys.stderr.flush()
    data = (message + "\n").encode("utf-8", "replace")
    try:
        os.write(sys.stderr.fileno(), data)
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capsys, notebooks)
        sys.stderr.write(message + "\n")


def main(argv: list[str] | None = None) -> int:
    _register_extra_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        _say(f"beyondbp: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("beyondbp: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - last-resort one-liner; tracebacks with BEYONDBP_DEBUG=1
        from ..train.loop import Interrupted
        if isinstance(exc, Interrupted):
            _say(f"beyondbp: {exc}")
            return 130
        if os.environ.get("BEYONDBP_DEBUG"):
            raise
        _say(f"beyondbp: error: {type(exc).__name__}: {exc} (set BEYONDBP_DEBUG=1 for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
