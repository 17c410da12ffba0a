"""Preparing a large corpus: tokenization speed per worker count, against a plain loop, and memory.

    python benchmarks/prepare_data.py [--dir /tmp/beyondbp-bench] [--gb 2] [--speed-mb 1000,80]
                                      [--repeats 3] [--tokenizers byte,bpe] [--skip-full bpe]
                                      [--train-steps 300]

1. Makes a ~`--gb` GB `.jsonl` corpus (documents of 5-60 random paragraphs of the built-in
   Shakespeare; kept in `--dir` for the next run).
2. Speed, on the corpus's first `--speed-mb` MB (byte, bpe; over 64 MB, so the streaming
   path): `beyondbp`'s prepare with 1 and 2 workers, each into a fresh cache (medians of
   `--repeats` alternating runs for bytes, one run for bpe), against a plain loop over the file
   (read a line, `json.loads`, and for bpe `Tokenizer.encode_batch` on batches of 1,024 documents
   with the same trained tokenizer; for bytes `str.encode`). Both sides use one core per
   process: TOKENIZERS_PARALLELISM=false, so encode_batch runs on one thread, as in a worker.
   The plain loop with the library's own threads (both cores) is printed too.
3. Memory and the finished product, on the whole corpus with each tokenizer (2 workers, the
   default on 2 cores): wall time, peak resident set of the main process and of the largest
   worker (getrusage), and their sum for all workers, bytes on disk.
4. A short training run on the prepared byte corpus: how long opening the data took (the text is
   not read again) and the validation loss at its first and last evaluation.

Figures are printed, not asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per process, on both sides

import numpy as np  # noqa: E402

PREPARE = """
import json, resource, sys, time
from beyondbp.config import DataConfig
from beyondbp.data.prepare import prepare_corpus
if __name__ == "__main__":
    cfg = DataConfig(**json.loads(sys.argv[1]))
    t = time.perf_counter()
    entry = prepare_corpus(cfg, quiet=True)
    took = time.perf_counter() - t
    meta = json.loads((entry / "meta.json").read_text())
    print(json.dumps({"seconds": took, "pass_seconds": meta["seconds"], "tokens": meta["tokens"],
                      "documents": meta["documents"], "source_bytes": meta["source_bytes"],
                      "disk_bytes": sum(p.stat().st_size for p in entry.iterdir()),
                      "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def make_corpus(path: Path, gigabytes: float) -> None:
    if path.exists() and path.stat().st_size >= gigabytes * 1e9 * 0.99:
        return
    from beyondbp.config import DataConfig
    from beyondbp.data.sources import read_documents
    paragraphs = [p for d in read_documents(DataConfig()) for p in d.split("\n\n") if p.strip()]
    rng = random.Random(0)
    t, size = time.perf_counter(), 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while size < gigabytes * 1e9:
            doc = "\n\n".join(rng.choice(paragraphs) for _ in range(rng.randint(5, 60)))
            line = json.dumps({"text": doc, "id": rng.getrandbits(32)}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
    os.replace(tmp, path)
    print(f"made {path}: {size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s", flush=True)


def head_file(src: Path, dst: Path, megabytes: int) -> None:
    """The first lines of `src` holding about `megabytes` MB."""
    if dst.exists():
        return
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(f.read(megabytes * 10**6))
        out.write(f.readline())


def run_prepare(corpus: Path, cache: Path, **keys) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    settings = {"corpus": str(corpus), "cache_dir": str(cache), **keys}
    out = subprocess.run([sys.executable, "-c", PREPARE, json.dumps(settings)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"prepare failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_loop(corpus: Path, tokenizer_json: str | None) -> tuple[float, int]:
    """Seconds and tokens of the obvious loop over the file."""
    tk = None
    if tokenizer_json:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(tokenizer_json)
    t, n, batch = time.perf_counter(), 0, []
    with open(corpus, "rb") as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == 1024:
                n += sum(len(e.ids) for e in tk.encode_batch(batch)) if tk else sum(len(d.encode()) for d in batch)
                batch = []
    if batch:
        n += sum(len(e.ids) for e in tk.encode_batch(batch)) if tk else sum(len(d.encode()) for d in batch)
    return time.perf_counter() - t, n


PARALLEL_REF = """
import sys
sys.path.insert(0, sys.argv[3])
from prepare_data import plain_loop
from pathlib import Path
print(plain_loop(Path(sys.argv[1]), sys.argv[2])[0])
"""


def speed(corpus: Path, work: Path, tokenizer: str, megabytes: int, repeats: int) -> dict:
    """MB/s of 1 and 2 workers and of the plain loop on the corpus's first `megabytes` MB:
    medians over `repeats` alternating runs (this machine is shared and noisy)."""
    sample = work / f"head-{megabytes}mb.jsonl"
    head_file(corpus, sample, megabytes)
    mb = sample.stat().st_size / 1e6
    rates: dict = {1: [], 2: [], "plain": []}
    tok_json = None
    for _ in range(repeats):
        for workers in (1, 2):
            row = run_prepare(sample, work / f"speed-{tokenizer}-{workers}", tokenizer=tokenizer, workers=workers)
            rates[workers].append(mb / row["pass_seconds"])
            tokens = sum(row["tokens"].values())
        if tokenizer == "bpe" and tok_json is None:
            tok_json = str(next((work / "speed-bpe-2" / "tokens").glob("*/tokenizer.json")))
        ref_s, ref_tokens = plain_loop(sample, tok_json)
        rates["plain"].append(mb / ref_s)
    one, two, plain = (float(np.median(rates[k])) for k in (1, 2, "plain"))
    result = {"tokenizer": tokenizer, "sample_mb": round(mb, 1), "repeats": repeats,
              "mb_s_1_worker": round(one, 2), "mb_s_2_workers": round(two, 2), "mb_s_plain_loop": round(plain, 2),
              "two_over_one": round(two / one, 2), "one_over_plain": round(one / plain, 2),
              "runs_mb_s": {str(k): [round(r, 1) for r in v] for k, v in rates.items()},
              "tokens_ours": tokens, "tokens_plain_loop": ref_tokens}
    if tokenizer == "bpe":
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}
        out = subprocess.run([sys.executable, "-c", PARALLEL_REF, str(sample), tok_json, str(Path(__file__).parent)],
                             capture_output=True, text=True, env=env, check=True)
        result["mb_s_plain_loop_library_threads"] = round(mb / float(out.stdout.strip()), 2)
    print(json.dumps(result), flush=True)
    return result


def train_on(corpus: Path, cache: Path, steps: int) -> dict:
    from beyondbp.config import build_config
    from beyondbp.data.tokens import load_token_data
    from beyondbp.train.loop import train
    keys = [f"data.corpus={corpus}", f"data.cache_dir={cache}", "model.n_layer=2", "model.d_model=64",
            "model.n_head=4", "model.context=128", f"train.tokens={steps * 4096}", "train.batch_tokens=4096",
            "train.lr=3e-3", "train.n_evals=6", "train.eval_tokens=32768", "train.progress=off"]
    t = time.perf_counter()
    load_token_data(build_config(None, keys).data, quiet=True)
    open_s = time.perf_counter() - t
    out = cache / "run"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    train(build_config(None, keys), out, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in rows if "val_loss" in r]
    result = {"open_data_s": round(open_s, 3), "train_s": round(time.perf_counter() - t, 1),
              "val_loss_first": round(losses[0], 3), "val_loss_last": round(losses[-1], 3)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/beyondbp-bench", help="where the corpus and caches go")
    ap.add_argument("--gb", type=float, default=2.0, help="size of the generated corpus")
    ap.add_argument("--speed-mb", default="1000,80",
                    help="sample sizes (MB) for the byte,bpe speed runs; over 64 MB takes the streaming path")
    ap.add_argument("--tokenizers", default="byte,bpe", help="which tokenizers to measure")
    ap.add_argument("--skip-full", default="", help="comma-separated tokenizers to skip on the whole corpus")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs per figure for the byte speed")
    ap.add_argument("--train-steps", type=int, default=300)
    args = ap.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{args.gb:g}gb.jsonl"
    make_corpus(corpus, args.gb)
    print(f"cpus: {len(os.sched_getaffinity(0))}; corpus {corpus.stat().st_size / 1e9:.2f} GB", flush=True)
    byte_mb, bpe_mb = (int(x) for x in args.speed_mb.split(","))
    chosen = args.tokenizers.split(",")
    if "byte" in chosen:
        speed(corpus, work, "byte", byte_mb, args.repeats)
    if "bpe" in chosen:
        speed(corpus, work, "bpe", bpe_mb, 1)
    for tokenizer in chosen:
        if tokenizer in args.skip_full.split(","):
            continue
        row = run_prepare(corpus, work / f"full-{tokenizer}", tokenizer=tokenizer, workers=2)
        gb = row["source_bytes"] / 1e9
        print(json.dumps({"full": tokenizer, "gb": round(gb, 2), "seconds": round(row["seconds"], 1),
                          "mb_s": round(gb * 1e3 / row["pass_seconds"], 2), "tokens": row["tokens"],
                          "disk_gb": round(row["disk_bytes"] / 1e9, 2), "main_rss_mb": round(row["main_rss_mb"]),
                          "worker_rss_mb": round(row["worker_rss_mb"]),
                          "total_rss_mb_bound": round(row["main_rss_mb"] + 2 * row["worker_rss_mb"])}), flush=True)
    if "byte" in chosen and "byte" not in args.skip_full.split(","):
        train_on(corpus, work / "full-byte", args.train_steps)


if __name__ == "__main__":
    main()
