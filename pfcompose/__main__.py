"""Allow ``python -m pfcompose``."""

from pfcompose.cli import entry

if __name__ == "__main__":
    entry()
