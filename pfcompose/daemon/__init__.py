"""``up -d``: the per-project background process and the control socket that drives it.

The daemon runs lean like ``up``'s foreground runtime, so this ``__init__`` imports nothing.
"""
