"""What is read: corpora (`sources`, `hf`) and their train/validation split (`split`), tokenizers (`tokenizers`), the cache
and its addresses (`cache`), preparing a corpus into shards (`prepare`, `shards`), fingerprints
of corpora and tokens (`fingerprint`), the token arrays training reads (`tokens`) and the MLP
track's image data sets (`images`). Only `tokens` loads torch.

May import: config, atomic_write. Never model, methods, train, study or above.
"""
