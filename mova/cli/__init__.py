"""Command modules for ``python -m mova``."""
