"""The base of every error visreps raises for bad input; the CLI prints these as one clear line."""


class VisrepsError(Exception):
    """Bad input or environment: the message names the thing at fault and how to fix it."""
