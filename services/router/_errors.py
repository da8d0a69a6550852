"""Router errors, on top of the shared KoverageError tree.

    KoverageError (koverage.errors)
    ├── NotFoundError
    │   └── ModelNotFoundError          unknown catalog id
    ├── ResourceExhaustedError
    │   └── ProviderRateLimitedError    429 from the provider
    └── UnavailableError
        ├── ProviderUnavailableError    5xx, refused connection, open circuit
        │   └── ProviderRejectedError   4xx other than 429 (bad key, model
        │                               name): FAILED_PRECONDITION
        ├── FirstTokenTimeoutError      no first token in time (cold start)
        └── StreamBrokenError           the provider dropped a started stream

Provider errors before the first token are retried and may fall back to the
next model; after the first token they end the stream.
"""

import grpc

from koverage.errors import NotFoundError, ResourceExhaustedError, UnavailableError


class ModelNotFoundError(NotFoundError):
    """The requested model is not in the catalog."""


class ProviderRateLimitedError(ResourceExhaustedError):
    """The provider answered 429; `retry_after_s` is its Retry-After, if any."""


class ProviderUnavailableError(UnavailableError):
    """The provider is down, erroring (5xx) or its circuit is open.

    `retryable` is false when repeating the same call cannot help (the
    provider rejected it with a 4xx); the router then moves straight on to
    the next model in the fallback chain.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderRejectedError(ProviderUnavailableError):
    """The provider refused the call with a 4xx other than 429: our key or our
    request is wrong for it (a configuration problem, not an outage).

    The router treats it like an outage of that provider (never retried on
    it, the fallback chain goes on), but if no model answers, the caller
    gets FAILED_PRECONDITION rather than UNAVAILABLE, so clients do not
    retry a call that cannot succeed until the configuration is fixed.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class FirstTokenTimeoutError(ProviderUnavailableError):
    """The provider sent no token within the first-token deadline."""


class StreamBrokenError(UnavailableError):
    """The provider's stream ended abnormally after tokens were sent."""
