"""Other kubectl versions for tests (kept for users): :mod:`pfcompose.sandbox.testing_kubectl`."""

from pfcompose.sandbox.testing_kubectl import *  # noqa: F403
from pfcompose.sandbox.testing_kubectl import __all__ as __all__
