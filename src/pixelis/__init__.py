"""Pixelis: train and serve pixel-space reasoning agents."""

__version__ = "0.1.0"
