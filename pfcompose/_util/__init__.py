"""Small private helpers shared by several packages (no pfcompose imports of their own)."""
