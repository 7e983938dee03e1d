"""The store's own errors. All are user-facing: the CLI prints the message as one line, exit 2.

Every message names the database by its redacted URL (password hidden) and says what to do.
"""


class StoreError(Exception):
    """Base class: a problem with the database the user pointed us at."""


class BadUrlError(StoreError):
    """The database URL cannot be parsed or names a backend resweep does not support."""


class UnreachableError(StoreError):
    """The database cannot be opened: server down, wrong host/port/credentials, missing file."""


class NoDatabaseError(StoreError):
    """Opening without creating found no resweep database at the URL."""


class NotResweepError(StoreError):
    """The database has tables but no resweep schema version: not ours, refused."""


class SchemaBehindError(StoreError):
    """The database's schema is older than the code's: run `db upgrade`."""


class SchemaAheadError(StoreError):
    """The database's schema is newer than the code's: a newer resweep wrote it."""


class IntegrityStoreError(StoreError):
    """A write broke a constraint (a key that must be unique, a reference to a missing row)."""


class SweepExistsError(IntegrityStoreError):
    """A sweep of that name is already in the database."""


class SweepBusyError(StoreError):
    """Another process is running the sweep now (it holds the sweep's claim: db.writes.claim_sweep)."""


class RefusedStatementError(StoreError):
    """The read-only query path refused a statement that could write (or several statements)."""


class QueryError(StoreError):
    """The database rejected a user's read-only query (syntax, unknown table, timeout)."""


class RolePrivilegeError(StoreError):
    """The migrating role may not make or grant the read-only role resweep_reader."""
