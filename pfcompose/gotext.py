"""Kept while ``wire/`` still imports this name; the module is :mod:`pfcompose._util.gotext`."""

from pfcompose._util.gotext import go_quote, go_quote_list

__all__ = ["go_quote", "go_quote_list"]
