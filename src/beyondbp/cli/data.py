"""`beyondbp data prepare`: tokenize a corpus into the shard cache that train and study read."""
from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from .train import keys_help


def cmd_prepare(args) -> int:
    from ..config import build_config
    from ..data.prepare import prepare_corpus
    from ..data.tokens import load_token_data
    cfg = build_config(args.config, args.overrides)
    if cfg.model.kind != "gpt":
        raise ConfigError(f"model.kind: data prepare is for token corpora (gpt), not {cfg.model.kind!r}")
    try:
        prepare_corpus(cfg.data, quiet=args.quiet, summary=True)
        data = load_token_data(cfg.data, quiet=True)
    except KeyboardInterrupt:
        print("beyondbp: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    context = cfg.model.context
    n_seqs = max(1, cfg.train.batch_tokens // context)
    data.check(n_seqs, context)  # a corpus smaller than one batch: one line, the prepared entry stays
    meta = data.meta
    if args.quiet:
        return 0
    print(f"train {meta['tokens']['train']:,} tokens ({_docs(meta['documents']['train'])}), "
          f"val {meta['tokens']['val']:,} tokens ({_docs(meta['documents']['val'])}); "
          f"vocabulary {data.vocab_size:,}; {data.epochs_for(cfg.train.tokens):.3g} epochs at "
          f"train.tokens={cfg.train.tokens:,}")
    return 0


def _docs(n: int) -> str:
    return f"{n:,} document{'s' * (n != 1)}"


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="prepare corpora")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser(
        "prepare", help="tokenize a corpus into sharded token files (resumable)",
        description="Stream a corpus through tokenizer workers into the shard cache that `train` and "
                    "`study` read. Takes the same KEY=VALUE settings as `train` (data.* decide the "
                    "cache entry); kill it and rerun the same command to continue.",
        epilog=keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--config", help="YAML file with a run config")
    q.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    q.set_defaults(func=cmd_prepare)
