"""Exceptions raised by vizkit: one clear message that says what was wrong and how to fix it."""

from __future__ import annotations


class VizkitError(ValueError):
    """Base class for every error vizkit raises on bad input."""


class LayerNotFoundError(VizkitError, KeyError):
    """A layer spec names no module of the model (the message lists the closest names)."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class TargetError(VizkitError):
    """Targets that do not fit the batch (length mismatch, bad class index, wrong type)."""


class InputError(VizkitError):
    """Inputs of the wrong shape or type."""


class CaptureError(VizkitError, RuntimeError):
    """A forward pass did not produce what was to be captured (no attention, no gradient)."""


class ParameterError(VizkitError):
    """A notebook / CLI parameter with an unknown name or an invalid value."""
