"""Exceptions salmask raises for problems a user can fix (bad files, bad config)."""
from __future__ import annotations


class SalmaskError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class InputError(SalmaskError):
    """A bad or missing input file; the message names the file and the problem."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class OutputError(SalmaskError, OSError):
    """A write that failed (disk full, file size limit, read-only folder); the message says what to free or
    fix. The partial file is removed, so nothing half-written is ever trusted. Also an ``OSError``."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class ConfigError(SalmaskError):
    """A configuration key or value that does not exist or cannot be used."""


class ArgumentError(SalmaskError, ValueError):
    """A bad argument to a library function (shape, dtype, range, NaN); also a ``ValueError``."""
