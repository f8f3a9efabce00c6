"""Errors a training command reports as one line and a non-zero exit status."""


class TrainingError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""

    exit_code = 1


class UsageError(TrainingError):
    """Bad arguments or configuration (what the user typed)."""

    exit_code = 2


class DataError(TrainingError):
    """Input data that cannot be used (empty corpus, missing columns, ...)."""

    exit_code = 3
