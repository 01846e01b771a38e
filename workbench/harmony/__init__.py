"""Harmony: the gpt-oss conversation format (rendering, parsing, tools)."""

from .encoding import encoding

__all__ = ["encoding"]
