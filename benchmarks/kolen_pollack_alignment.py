"""Plot Kolen-Pollack's alignment over training from a run folder (docs/kolen_pollack_alignment.png).

    beyondbp train method=kolen_pollack model.n_layer=4 model.d_model=64 train.tokens=2000000 \
        train.threads=1 train.alignment_every=1 --out runs/kp
    python benchmarks/kolen_pollack_alignment.py runs/kp docs/kolen_pollack_alignment.png

Two curves per evaluation: the mean cosine between each feedback matrix B and its weight W
(`method/feedback_alignment`, logged by the method at every step, averaged between evaluations)
and, per block, the cosine of the method's update with the true BP gradient (`alignment`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(run: str, png: str) -> None:
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > 0]
    tokens = [r["tokens"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    top.plot(tokens, [r["method"]["feedback_alignment"] for r in rows], "k-o", ms=3, label="cos(B, W), mean over layers")
    for block in rows[-1].get("alignment") or {}:
        top.plot(tokens, [r["alignment"][block] for r in rows], lw=1, label=f"update vs BP, {block}")
    top.set_ylabel("cosine")
    top.legend(fontsize=7)
    bottom.plot(tokens, [r["val_loss"] for r in rows], "k-")
    bottom.set_ylabel("validation loss")
    bottom.set_xlabel("tokens")
    bottom.set_xscale("log")
    fig.suptitle("Kolen-Pollack, 4 blocks, d_model 64")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
