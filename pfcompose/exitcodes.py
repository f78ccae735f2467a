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

    INTERRUPTED = 130
    """A second Ctrl-C forced an immediate exit."""
