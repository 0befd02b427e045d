"""Exceptions with a meaning for the command line."""


class FerkitError(Exception):
    """A problem the user can fix (bad path, bad format, bad option).

    The CLI prints its message on one line, without a traceback, and exits 2.
    """


class DataError(FerkitError):
    """A dataset path or file that cannot be used."""
