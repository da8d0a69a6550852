"""Errors shared by every Koverage service, and their gRPC status codes.

    KoverageError
    ├── InvalidArgumentError      INVALID_ARGUMENT
    ├── NotFoundError             NOT_FOUND
    ├── AlreadyExistsError        ALREADY_EXISTS
    ├── FailedPreconditionError   FAILED_PRECONDITION
    ├── UnauthenticatedError      UNAUTHENTICATED
    ├── ResourceExhaustedError    RESOURCE_EXHAUSTED (carries retry_after_s)
    ├── UnavailableError          UNAVAILABLE
    └── DeadlineExceededError     DEADLINE_EXCEEDED

Services raise these; the server interceptor translates them to status codes
in one table (`status_code_for`). Anything else escaping a handler is our bug
and becomes INTERNAL.
"""

import grpc


class KoverageError(Exception):
    """Base of every error a Koverage service means to report to a caller."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgumentError(KoverageError):
    """The request is malformed; retrying it unchanged will fail again."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(KoverageError):
    """The named thing does not exist (or belongs to another tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(KoverageError):
    """The thing to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(KoverageError):
    """The target is in the wrong state for this request."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(KoverageError):
    """The API key is missing or unknown."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(KoverageError):
    """A quota or rate limit was hit; retry after `retry_after_s` seconds."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(KoverageError):
    """A dependency is down for now; the same request may succeed later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(KoverageError):
    """The caller's deadline passed before the work finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    """Returns the gRPC status code that reports `exc` to a caller."""
    if isinstance(exc, KoverageError):
        return exc.code
    return grpc.StatusCode.INTERNAL


_ERROR_FOR_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        UnauthenticatedError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
    )
}


def error_from_rpc(exc: grpc.RpcError) -> KoverageError:
    """Translates a client-side RpcError into our error type (keep `from exc`)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _ERROR_FOR_CODE.get(code)
    if cls is None:
        error = KoverageError(f"{code.name}: {details}")
        error.code = code
        return error
    return cls(details or code.name)
