"""smartbkg-prod: production of NN-filtered simulated-event campaigns."""

__version__ = "0.1.0"
