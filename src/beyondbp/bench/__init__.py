"""`beyondbp bench`: throughput, FLOP/s, memory and data wait of each method (`measure`), against
a plain PyTorch GPT shipped with the package (`reference_gpt`). It takes the real optimizer step
(`train.step`), so the benchmark cannot drift from training.

May import: train, methods, data, model, config. Never study, report or cli.
"""
