"""pytest support for users: ``pytest_plugins = ["pfcompose.testing"]`` in a conftest.

The plugin lives beside the sandbox it drives (:mod:`pfcompose.sandbox.pytest_plugin`);
this name is kept so existing suites keep working.
"""

from pfcompose.sandbox.pytest_plugin import *  # noqa: F403 - the plugin's fixtures and helpers
from pfcompose.sandbox.pytest_plugin import __all__ as __all__
