"""The compute accountings: how a run's compute is counted, and where the run folder records it.

A method declares its FLOPs per token under each counted accounting (`compute_per_token()`:
the keys `DECLARED`); a run's metrics.jsonl records each as a column (`folder.compute_columns`),
and the wall-clock accounting reads the measured `elapsed_s`. The report fits one frontier per
accounting, in that accounting's `unit`: a column's value times `factor`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import PF_DAY


@dataclass(frozen=True)
class Accounting:
    name: str
    column: str  # the metrics.jsonl column it reads
    factor: float  # column value x factor = compute in `unit`
    unit: str
    description: str
    declared: bool  # a key of every method's compute_per_token() (False: measured, not declared)


ACCOUNTINGS: dict[str, Accounting] = {a.name: a for a in (
    Accounting("paper", "compute_pf_days", 1.0, "PF-days",
               "the paper's count (BP 6N, DFA 4N, shallow 2N FLOPs per token)", True),
    Accounting("optimistic", "compute_flops_optimistic", 1.0 / PF_DAY, "PF-days",
               "optimistic count (a free feedback projection, e.g. on an optical co-processor)", True),
    Accounting("exact", "compute_flops_exact", 1.0 / PF_DAY, "PF-days",
               "exact FLOP count, attention and feedback included", True),
    Accounting("wall_clock", "elapsed_s", 1.0, "s", "measured training wall-clock seconds on this study's hardware",
               False),
)}
DECLARED = tuple(name for name, a in ACCOUNTINGS.items() if a.declared)  # the keys of compute_per_token()
