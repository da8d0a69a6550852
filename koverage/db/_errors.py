"""Errors raised by the schema migration runner.

KoverageError
└── MigrationError              the migrations cannot be applied as asked
    ├── MigrationFileError      a migration directory is malformed
    ├── MigrationChecksumError  an applied file was edited afterwards
    ├── MigrationHistoryError   the database has versions the directory lacks
    └── MigrationFailedError    a file's SQL failed; its transaction rolled back
"""

from koverage.errors import KoverageError


class MigrationError(KoverageError):
    """The migrations cannot be applied as asked."""


class MigrationFileError(MigrationError):
    """A migration directory holds a misnamed or duplicate file."""


class MigrationChecksumError(MigrationError):
    """A migration file changed after it was applied to this database."""


class MigrationHistoryError(MigrationError):
    """The database records a migration the directory does not contain."""


class MigrationFailedError(MigrationError):
    """A migration's SQL failed; nothing of that file was applied."""
