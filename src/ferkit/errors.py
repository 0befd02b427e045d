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


def tally(counts) -> str:
    """Skip reasons and their counts for a summary line, most frequent first.

    ``{"corrupt or unreadable image": 2, "not an image file": 1}`` reads
    "2x corrupt or unreadable image, 1x not an image file": a count of a reason, so
    that no noun needs a plural (it read "2 corrupt or unreadable image").
    """
    return ", ".join(f"{n}x {r}" for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
