"""Errors that describe what the user asked for, as opposed to bugs.

:class:`UsageError` carries one line that names the input at fault (a config key,
``out``, ``memory``, ...) and what would be accepted; the command line prints that
line and exits with status 2. Any other exception reaching the command line is a bug
in tokensde (exit 1, reported as such). Pure: no imports beyond the standard library.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A problem with the input (config, paths, sizes): its message is one line starting with the input's name."""
