"""beyondbp: scaling laws beyond backpropagation."""
__version__ = "0.1.0"
