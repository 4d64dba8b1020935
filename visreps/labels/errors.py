"""The error the labels library raises for bad input (a K, a PC count, a table, a source, weights)."""

from visreps.errors import VisrepsError


class LabelError(VisrepsError, ValueError):
    """Bad input to label derivation; the message names the value or file at fault and how to fix it."""
