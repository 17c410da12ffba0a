"""Uniform sign-concordant feedback for beyondbp (`method=sign_symmetry`)."""
from .method import SignSymmetry

__all__ = ["SignSymmetry"]
