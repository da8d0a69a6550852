"""Errors raised while rendering the Underwriter report.

KoverageError
└── InvalidArgumentError
    └── ScorecardError        the scorecard cannot be rendered as given
KoverageError
└── ReportLayoutError         the report would not fit on one page
"""

from koverage.errors import InvalidArgumentError, KoverageError


class ScorecardError(InvalidArgumentError):
    """The scorecard is malformed or of a schema version we cannot render."""


class ReportLayoutError(KoverageError):
    """Even the tightest layout overflowed one page; this is our bug."""
