"""``pfcompose up``'s forwarding runtime: listeners, forwards, connections, the supervisor.

What the lean process runs (``up/launch.py`` → ``up/runtime.py``); it imports no
pydantic, yaml or kubernetes package, so this ``__init__`` imports nothing.
"""
