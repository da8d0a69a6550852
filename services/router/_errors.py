"""Router errors, on top of the shared KoverageError tree.

    KoverageError (koverage.errors)
    ├── NotFoundError
    │   └── ModelNotFoundError          unknown catalog id
    ├── ResourceExhaustedError
    │   └── ProviderRateLimitedError    429 from the provider
    └── UnavailableError
        ├── ProviderUnavailableError    5xx, refused connection, open circuit
        ├── FirstTokenTimeoutError      no first token in time (cold start)
        └── StreamBrokenError           the provider dropped a started stream

Provider errors before the first token are retried and may fall back to the
next model; after the first token they end the stream.
"""

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


class FirstTokenTimeoutError(ProviderUnavailableError):
    """The provider sent no token within the first-token deadline."""


class StreamBrokenError(UnavailableError):
    """The provider's stream ended abnormally after tokens were sent."""
