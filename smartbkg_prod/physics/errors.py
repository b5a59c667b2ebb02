"""The physics library's exceptions. Whoever runs the chain decides what they mean for a
job: the worker maps :class:`GeneratorError` to its ``GENERATOR`` exit code."""

from __future__ import annotations


class PhysicsError(Exception):
    """A physics stage cannot run; the message says what went wrong and what to do."""


class GeneratorError(PhysicsError):
    """The event generator failed to initialise or to produce events."""
