"""lookalike: train, evaluate and serve top-k image retrieval."""

__version__ = "0.1.0"
