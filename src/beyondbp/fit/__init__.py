"""Numbers in, numbers out: compute-efficient frontiers (`frontier`), bootstrap intervals
(`bootstrap`), fits with a floor (`floor_fit`, `shared_floor`), verdicts A-D (`verdict`), compute
multipliers (`multiplier`), simulated studies for calibration (`simulate`), the L(N, D) fits
(`lnd*`) and `beyondbp fit`'s points table (`points`); `defaults`, the defaults the command line
shows, imports nothing; `strict_json` writes results without Infinity or NaN. NumPy/SciPy only, no torch.

May import: config. Nothing else of the package (the report and the CLI call into it).
"""
