"""The one exception type for mistakes in what a user hands pcseg.

A bad data file, budget, checkpoint or config raises :class:`InputError` (or a subclass) with a
message of the form ``<file>: <field>: <what was expected, what was found>``. The tools catch it
and print ``error: <message>`` with no traceback; library callers can catch it like a ValueError.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input (data, budget, checkpoint, config); the message names the file and field."""


class BadArgumentError(InputError):
    """A constructor argument found wrong; ``argument`` is its name, which a builder from a config
    turns into the config key (e.g. ``split`` → ``data.val.split``)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument
