"""The store's own errors. All are user-facing: the CLI prints the message as one line, exit 2."""


class StoreError(Exception):
    """Base class: a problem with the database the user pointed us at."""
