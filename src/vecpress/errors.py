"""Exception classes raised by vecpress."""

from __future__ import annotations


class FormatError(ValueError):
    """A serialized codec or index is truncated, tampered with, or not vecpress data.

    The message names the source (a file path or ``"<bytes>"``) and the section
    that failed validation.
    """


class NotFittedError(ValueError):
    """A codec that must learn from data was used before :meth:`Codec.fit`."""


class LockedError(OSError):
    """Another writer holds the lock of an index file."""
