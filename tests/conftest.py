import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Token caches go to one per-session folder, never the user's home."""
    monkeypatch.setenv("BEYONDBP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")


TINY = ["model.n_layer=2", "model.d_model=16", "model.n_head=2", "model.context=32",
        "train.tokens=20480", "train.batch_tokens=1024", "train.eval_tokens=4096", "train.n_evals=5",
        "train.threads=1", "train.progress=off", "train.lr=1e-2"]


@pytest.fixture
def tiny_overrides():
    return list(TINY)
