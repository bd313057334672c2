"""Figures built from explanation results: one small module per kind of figure.

Presentation layer (beside :mod:`vizkit.render`, whose primitives they compose): they may import
the core, the math, :mod:`vizkit.io` and the shared layer, never a scenario or a model library.
"""
