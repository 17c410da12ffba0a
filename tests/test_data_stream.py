"""The streaming, sharded data path: large-corpus mode, shards, window orders, resume, errors."""
import builtins
import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from beyondbp.data import prepare as data_prepare

from beyondbp.data import sources as data_sources
from beyondbp.cli.main import main
from beyondbp.config import ConfigError, DataConfig
from beyondbp.data.cache import cache_entry
from beyondbp.data.tokens import load_token_data
from beyondbp.data.shards import WindowOrder, feistel_permutation
from beyondbp.data.sources import hash_split

WORDS = ("the king doth wake tonight and takes his rouse keeps wassail and the swaggering upspring "
         "reels naïve café 漢字 🎭").split()


def write_jsonl(path: Path, n_docs: int, seed: int = 0, field: str = "text") -> list[str]:
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 400)))) + f" ({i})" for i in range(n_docs)]
    path.write_text("".join(json.dumps({field: d, "id": i}, ensure_ascii=False) + "\n" for i, d in enumerate(docs)),
                    encoding="utf-8")
    return docs


@pytest.fixture
def streamed(monkeypatch):
    """Every corpus takes the large-corpus (streaming) path, in small blocks."""
    monkeypatch.setattr(data_sources, "SMALL_CORPUS_BYTES", 0)
    monkeypatch.setattr(data_sources, "BLOCK_BYTES", 4096)


def shard_digests(entry: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(entry.glob("*.bin"))}


def test_stream_split_is_by_document_hash_and_tokens_are_the_documents(tmp_path, streamed):
    docs = write_jsonl(tmp_path / "c.jsonl", 300)
    cfg = DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "cache"), val_fraction=0.2)
    data = load_token_data(cfg, quiet=True)
    val_docs = [d for d in docs if hash_split(d.encode(), 0.2)]
    train_docs = [d for d in docs if not hash_split(d.encode(), 0.2)]
    assert 30 < len(val_docs) < 90  # ~20% of 300 documents
    assert data.meta["mode"] == "stream" and data.meta["documents"] == {"train": len(train_docs), "val": len(val_docs)}
    assert np.asarray(data.train).tobytes().decode() == "\n\n".join(train_docs)
    assert np.asarray(data.val).tobytes().decode() == "\n\n".join(val_docs)


def test_two_workers_write_the_same_shards_as_one(tmp_path, streamed):
    write_jsonl(tmp_path / "c.jsonl", 400)
    entries = []
    for workers in (1, 2):
        cfg = DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / f"w{workers}"),
                         tokenizer="bpe", vocab_size=300, workers=workers, shard_tokens=5000)
        load_token_data(cfg, quiet=True)
        entries.append(cache_entry(cfg))
    one, two = (shard_digests(e) for e in entries)
    assert len(one) > 4 and one == two
    assert not list(entries[1].glob(".block-*"))


def test_windows_span_shards_and_batches_do_not_depend_on_shard_size(tmp_path, streamed):
    write_jsonl(tmp_path / "c.jsonl", 200)
    whole = load_token_data(DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "a")), quiet=True)
    sharded = load_token_data(DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "b"),
                                         shard_tokens=1000), quiet=True)
    assert len(whole.train.files) == 1 and len(sharded.train.files) == -(-len(whole.train) // 1000)
    flat = np.asarray(whole.train)
    assert np.array_equal(np.asarray(sharded.train), flat) and sharded.train.max() == flat.max()
    assert np.array_equal(sharded.train[990:2010], flat[990:2010])  # a slice across two boundaries
    idx = np.random.default_rng(0).integers(0, len(flat), size=(7, 33))
    assert np.array_equal(sharded.train[idx], flat[idx]) and sharded.train[-1] == flat[-1]
    for step in (0, 5, 123):
        a, b = whole.train_batch(step, 16, 64, seed=3), sharded.train_batch(step, 16, 64, seed=3)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 4097, 65_537])
def test_feistel_order_is_a_bijection(n):
    images = feistel_permutation(np.arange(n), n, seed=5, epoch=2)
    assert np.array_equal(np.sort(images), np.arange(n))
    assert np.array_equal(images, feistel_permutation(np.arange(n), n, seed=5, epoch=2))
    if n > 100:
        other = feistel_permutation(np.arange(n), n, seed=5, epoch=3)
        assert (other != images).mean() > 0.9 and abs(np.corrcoef(images, np.arange(n))[0, 1]) < 0.1
        some = np.array([n - 1, 0, n // 2])
        assert np.array_equal(feistel_permutation(some, n, 5, 2), images[some])


def test_large_split_epochs_visit_every_window_once_in_the_feistel_order(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a.txt").write_text("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=5000)))
    data = load_token_data(DataConfig(corpus=str(tmp_path / "a.txt"), cache_dir=str(tmp_path / "c")), quiet=True)
    data._order = WindowOrder(exact_limit=10)  # as for a corpus of over 4M windows
    context, width = 7, 8
    n_windows = len(data.train) // width
    rows = [np.concatenate([x.numpy(), y.numpy()[:, -1:]], 1)[0].tolist()
            for x, y in (data.train_batch(s, 1, context, seed=1) for s in range(n_windows))]
    expected = np.asarray(data.train[:n_windows * width]).reshape(-1, width).tolist()
    assert n_windows > 500 and sorted(rows) == sorted(expected)  # every window exactly once
    assert rows[:50] != expected[:50]  # shuffled
    again = [data.train_batch(s, 1, context, seed=1)[0] for s in range(3)]
    assert all((a == data.train_batch(s, 1, context, seed=1)[0]).all() for s, a in enumerate(again))
    epoch1 = data.train_batch(n_windows, 1, context, seed=1)[0][0].tolist()
    assert epoch1 != rows[0][:-1] or data.train_batch(n_windows + 1, 1, context, seed=1)[0][0].tolist() != rows[1][:-1]


def test_max_tokens_caps_the_training_split_in_corpus_order(tmp_path, streamed):
    write_jsonl(tmp_path / "c.jsonl", 300)
    full = load_token_data(DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "a"),
                                      val_fraction=0.3), quiet=True)
    capped = load_token_data(DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "b"),
                                        val_fraction=0.3, max_tokens=60_000), quiet=True)
    assert len(capped.train) == 60_000 and np.array_equal(np.asarray(capped.train), np.asarray(full.train)[:60_000])
    assert 0 < len(capped.val) < len(full.val)
    assert np.array_equal(np.asarray(capped.val), np.asarray(full.val)[:len(capped.val)])


def test_large_txt_files_become_line_aligned_pieces(tmp_path, streamed, monkeypatch):
    monkeypatch.setattr(data_sources, "TXT_WHOLE_BYTES", 1000)
    monkeypatch.setattr(data_sources, "TXT_PIECE_BYTES", 300)
    lines = [f"line {i}: " + "word " * (i % 13) for i in range(400)]
    (tmp_path / "big.txt").write_text("\n".join(lines) + "\n")
    data = load_token_data(DataConfig(corpus=str(tmp_path / "big.txt"), cache_dir=str(tmp_path / "c"),
                                      val_fraction=0.3), quiet=True)
    n_docs = data.meta["documents"]["train"] + data.meta["documents"]["val"]
    assert n_docs > 10 and data.meta["documents"]["val"] > 0
    source = data_sources.open_source(DataConfig(corpus=str(tmp_path / "big.txt")))
    pieces = [d for block in source.blocks() for d in block.docs]
    assert "".join(pieces) == (tmp_path / "big.txt").read_text() and len(pieces) == n_docs
    assert all(p.endswith("\n") and 300 - 80 < len(p) <= 300 for p in pieces[:-1])  # lines are < 80 chars
    assert data.meta["characters"]["train"] + data.meta["characters"]["val"] == (tmp_path / "big.txt").stat().st_size


@pytest.mark.slow
def test_hf_stream_matches_the_same_file_read_directly(tmp_path, streamed, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the hf: corpus path needs `pip install datasets`")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    write_jsonl(tmp_path / "c.jsonl", 120)
    direct = load_token_data(DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "a")), quiet=True)
    via_hf = load_token_data(DataConfig(corpus="hf:json", hf_data_files=str(tmp_path / "c.jsonl"), hf_streaming=True,
                                        cache_dir=str(tmp_path / "b")), quiet=True)
    assert via_hf.meta["mode"] == "stream"
    assert np.array_equal(np.asarray(via_hf.train), np.asarray(direct.train))
    assert np.array_equal(np.asarray(via_hf.val), np.asarray(direct.val))


KILLABLE = textwrap.dedent("""
    import sys, time
    import beyondbp.data.sources as src, beyondbp.data.prepare as prep
    src.SMALL_CORPUS_BYTES, src.BLOCK_BYTES = 0, 8192
    write = prep.ShardWriter.write
    def slow(self, *a, **k):
        time.sleep(0.01)
        return write(self, *a, **k)
    prep.ShardWriter.write = slow
    if __name__ == "__main__":  # worker processes are spawned: they import this file too
        from beyondbp.cli.main import main
        sys.exit(main(["data", "prepare", "--quiet", *sys.argv[1:]]))
""")


@pytest.mark.slow
def test_killed_prepare_resumes_to_identical_shards(tmp_path, streamed):
    write_jsonl(tmp_path / "c.jsonl", 1500)
    keys = [f"data.corpus={tmp_path / 'c.jsonl'}", f"data.cache_dir={tmp_path / 'killed'}", "data.workers=2",
            "data.shard_tokens=40000"]
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    cfg = DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "killed"), workers=2, shard_tokens=40000)
    partial = cache_entry(cfg).with_name(cache_entry(cfg).name + ".partial")
    proc = subprocess.Popen([sys.executable, str(script), *keys])
    total = (tmp_path / "c.jsonl").stat().st_size
    deadline = time.time() + 300
    while True:
        try:
            if json.loads((partial / "state.json").read_text())["bytes"] > total // 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"prepare ended ({proc.returncode}) or recorded no third of the corpus in 300 s")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((partial / "state.json").read_text())
    assert 0 < state["bytes"] < total and not (cache_entry(cfg) / "meta.json").exists()
    assert subprocess.run([sys.executable, str(script), *keys]).returncode == 0
    cfg_ref = DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "ref"), shard_tokens=40000)
    load_token_data(cfg_ref, quiet=True)
    resumed, reference = shard_digests(cache_entry(cfg)), shard_digests(cache_entry(cfg_ref))
    assert len(reference) >= 4 and resumed == reference
    meta = json.loads((cache_entry(cfg) / "meta.json").read_text())
    assert meta["passes_started_at_bytes"] == [0, state["bytes"]]  # the rerun went on, not over
    assert not partial.exists() and not list(cache_entry(cfg).glob(".block-*"))


def test_bad_document_mid_stream_names_file_and_line_and_keeps_work(tmp_path, streamed):
    write_jsonl(tmp_path / "c.jsonl", 200)
    with open(tmp_path / "c.jsonl", "ab") as f:
        f.write(b'{"text": "caf\xe9 latin-1"}\n')
    cfg = DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "cache"), workers=2)
    with pytest.raises(ConfigError, match=r"^data.corpus: .*c.jsonl:201 is not UTF-8 text$"):
        load_token_data(cfg, quiet=True)
    state = json.loads((cache_entry(cfg).with_name(cache_entry(cfg).name + ".partial") / "state.json").read_text())
    assert state["tokens"]["train"] > 0  # the blocks before the bad line stay prepared


@pytest.mark.parametrize("content,message", [
    ('{"body": "no text field"}\n', r"data.text_field: .*c.jsonl:\d+ has no string field 'text'"),
    ("{not json\n", r"data.corpus: .*c.jsonl:\d+ is not valid JSON"),
])
def test_bad_rows_in_a_streamed_corpus(tmp_path, streamed, content, message):
    write_jsonl(tmp_path / "c.jsonl", 50)
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write(content)
    with pytest.raises(ConfigError, match=message):
        load_token_data(DataConfig(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "cache")), quiet=True)


def test_unreadable_file_is_one_line(tmp_path, streamed, monkeypatch):
    write_jsonl(tmp_path / "locked.jsonl", 20)
    real_open = builtins.open

    def guarded(path, *args, **kwargs):
        if str(path).endswith("locked.jsonl"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(ConfigError, match=r"^data.corpus: cannot read .*locked.jsonl: Permission denied$"):
        load_token_data(DataConfig(corpus=str(tmp_path / "locked.jsonl"), cache_dir=str(tmp_path / "c")), quiet=True)


def test_prepare_command_checks_one_batch_and_keeps_the_entry(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text("a small corpus. " * 150)
    keys = [f"data.corpus={tmp_path / 'tiny.txt'}", f"data.cache_dir={tmp_path / 'c'}"]
    assert main(["data", "prepare", "--quiet", *keys]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.corpus: training split has" in err and "fewer than one batch" in err
    entry = cache_entry(DataConfig(corpus=str(tmp_path / "tiny.txt"), cache_dir=str(tmp_path / "c")))
    assert (entry / "meta.json").exists()
    assert main(["data", "prepare", *keys, "train.batch_tokens=256", "model.context=32"]) == 0
    assert "train 2,280 tokens (1 document), val 120 tokens" in capsys.readouterr().out


def test_training_reads_the_prepared_shards_without_the_text(tmp_path, streamed, monkeypatch):
    from beyondbp.config import build_config
    from beyondbp.train.loop import train
    write_jsonl(tmp_path / "c.jsonl", 300)
    keys = [f"data.corpus={tmp_path / 'c.jsonl'}", f"data.cache_dir={tmp_path / 'c'}"]
    assert main(["data", "prepare", "--quiet", *keys]) == 0

    def no_reading(cfg):
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(data_prepare, "open_source", no_reading)
    cfg = build_config(None, keys + ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.context=32",
                                     "train.tokens=40960", "train.batch_tokens=1024", "train.lr=3e-3",
                                     "train.eval_tokens=2048", "train.n_evals=4", "train.progress=off"])
    summary = train(cfg, tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in rows if "val_loss" in r]
    assert summary["status"] == "completed" and losses[-1] < losses[0] - 1.0
