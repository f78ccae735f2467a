"""pfcompose: compose-style runner for Kubernetes port-forwards."""

__version__ = "0.1.0"
