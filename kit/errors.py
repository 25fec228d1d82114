"""Errors the user can act on. The CLI prints them as one line and exits non-zero."""


class KitError(Exception):
    """Bad input or a broken environment: the message names the file, row or parameter."""
