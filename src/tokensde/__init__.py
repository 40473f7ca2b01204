"""tokensde: token dynamics of deep random Transformers as SDEs on the sphere."""

__version__ = "0.1.0"
