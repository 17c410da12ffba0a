"""`beyondbp bench`: throughput, FLOP/s, memory and data wait of each method against a plain GPT."""
from __future__ import annotations

import argparse
import json

from ..config import ConfigError


def _csv(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def cmd_bench(args) -> int:
    import torch
    from ..bench.measure import BenchOptions, format_table, machine_line, run_bench
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    opts = BenchOptions(sizes=args.sizes, methods=args.methods, device=args.device, steps=args.steps,
                        batch_tokens=args.batch_tokens, compile=args.compile)
    rows = []
    for row in run_bench(opts):
        if args.json:
            print(json.dumps(row), flush=True)
        rows.append(row)
    if not args.json:
        print(machine_line(torch.device(args.device), rows[0]["matmul_peak_flops_per_s"] if rows else None))
        print(format_table(rows, markdown=args.markdown))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark methods against a plain PyTorch GPT",
                              description="Tokens/s, FLOP/s (and their fraction of the measured matmul peak), "
                                          "peak memory and data wait of each method, each as a ratio against "
                                          "beyondbp/bench/reference_gpt.py measured in the same process.")
    p.add_argument("--json", action="store_true", help="one JSON object per line, one per (size, method)")
    p.add_argument("--markdown", action="store_true", help="the table as Markdown")
    p.add_argument("--sizes", type=_csv, default=["0.1M", "1M", "10M"], help="comma-separated: 0.1M,1M,10M")
    p.add_argument("--methods", type=_csv, default=["bp", "dfa", "dfa_block", "shallow"],
                   help="comma-separated method names")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=10, help="timed steps per contestant (after 2 warm-up steps)")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens per step (default: per size)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile ours and the reference")
    p.set_defaults(func=cmd_bench)
