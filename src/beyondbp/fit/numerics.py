"""`quiet_numerics`: the fits and figures without NumPy's and Matplotlib's floating-point chatter.

A bootstrap refit that overflows, a log of 0 on a degenerate axis or a curve_fit without a
covariance prints raw `RuntimeWarning` lines ahead of the result; what a fit's numbers mean is
said by its quality checks and intervals (`fit.frontier`), so these notes are silenced around the
entry points that fit and draw: `beyondbp fit` and the study report.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np


@contextlib.contextmanager
def quiet_numerics():
    """A context (and decorator) in which NumPy's floating-point errors are ignored and no
    RuntimeWarning is shown; other warnings pass as they are."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
