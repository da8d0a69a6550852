"""Errors raised while running local engines and service processes.

KoverageError
└── LocalProcessError       a supervised child process misbehaved
    ├── ProcessStartError   it exited, or was not ready in time, during start
    └── ProcessDiedError    it exited on its own after it was ready
"""

from koverage.errors import KoverageError


class LocalProcessError(KoverageError):
    """A supervised child process misbehaved."""


class ProcessStartError(LocalProcessError):
    """A child exited before it was ready, or was not ready in time.

    The message carries the tail of the child's log file.
    """


class ProcessDiedError(LocalProcessError):
    """A child that was ready exited although nobody asked it to stop."""
