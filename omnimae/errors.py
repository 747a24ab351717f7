"""Errors that name the file or config key at fault."""
from __future__ import annotations


class OmniMAEError(Exception):
    """Base class: a problem with the user's input, reported without a traceback by the CLI."""


class ConfigError(OmniMAEError, ValueError):
    """A config value is missing, misspelled, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


class DataError(OmniMAEError, ValueError):
    """A data file cannot be used; the message names the file."""


class CheckpointError(OmniMAEError, ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and key."""


class OutputError(OmniMAEError, FileExistsError):
    """An output would overwrite an input or an existing file the user did not ask to replace."""
