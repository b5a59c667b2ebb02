"""The filter library's exceptions. Whoever runs the filter decides what they mean for a
job: the worker maps :class:`ModelLoadError` to its ``MODEL_LOAD`` exit code and
:class:`FilterDeviceError` to ``GPU``."""

from __future__ import annotations


class FilterError(Exception):
    """The filter cannot run; the message says what went wrong and what to do."""


class ModelLoadError(FilterError):
    """The filter model is missing, corrupt or incompatible with this code."""


class FilterDeviceError(FilterError):
    """The requested device (a GPU) is unusable, or failed while scoring."""
