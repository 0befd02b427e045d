"""Exceptions with a meaning for the command line."""


class FerkitError(Exception):
    """A problem the user can fix (bad path, bad format, bad option).

    The CLI prints its message on one line, without a traceback, and exits 2.
    Batch commands that skip a bad input and carry on group the skips by the
    class's ``reason`` (a short category for the summary line), never by the
    message text.
    """

    reason = "error"


class DataError(FerkitError):
    """A dataset path or file that cannot be used."""

    reason = "unreadable input"
