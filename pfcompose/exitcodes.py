"""Exit statuses of the ``pfcompose`` command; each one means one thing.

Scripts branch on these, so they never change meaning.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """The command did what it was asked (``up``: a clean stop after Ctrl-C/SIGTERM/``down``)."""

    FAILURE = 1
    """It ran but failed: no forward could start, a port check failed, ``--wait`` timed out."""

    CONFIG = 2
    """The configuration or the command line is wrong; nothing was started."""

    NOT_READY = 125
    """``run``: the forwards did not become ready (and healthy) within ``--wait-timeout``;
    CMD was not started. (``run``'s other statuses are CMD's own.)"""

    CANNOT_EXECUTE = 126
    """``run``: CMD was found but could not be executed (as ``env`` and ``docker run``)."""

    NOT_FOUND = 127
    """``run``: CMD was not found."""

    INTERRUPTED = 130
    """A second Ctrl-C forced an immediate exit."""
