"""One exception family; `app` maps it to HTTP in exactly one place.

Each error carries a stable `code`, an HTTP `status` and a client-facing
`message` that is fixed and safe: it never holds a token, a secret value, a
private key or an upstream body. Details for operators go to the log.
"""

from __future__ import annotations

from collections.abc import Sequence


class ExchangerError(Exception):
    """Base of every error the gateway answers with."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "internal error"
    #: The RFC 6749 §5.2 error code on the token-exchange route (RFC 8693); None: `code`.
    oauth_error: str | None = None

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)


class InvalidRequest(ExchangerError):
    status = 400
    code = "invalid_request"
    default_message = "invalid request"
    oauth_error = "invalid_request"


class InvalidTarget(InvalidRequest):
    """A token-exchange target (`resource`, `audience`) that names nothing exchangeable."""

    oauth_error = "invalid_target"


class InvalidScope(InvalidRequest):
    oauth_error = "invalid_scope"


class UnsupportedGrantType(InvalidRequest):
    oauth_error = "unsupported_grant_type"


class InvalidToken(ExchangerError):
    status = 401
    code = "invalid_token"
    default_message = "invalid token"
    oauth_error = "invalid_grant"  # the subject token


class MissingToken(InvalidToken):
    """No bearer token at all: RFC 6750 §3.1 says the challenge then names no error."""

    default_message = "missing bearer token"


class AccessDenied(ExchangerError):
    status = 403
    code = "access_denied"
    default_message = "no policy allows this request"
    oauth_error = "invalid_target"  # RFC 8693 §2.2.2: unwilling to issue for that target


class Conflict(ExchangerError):
    status = 409
    code = "conflict"
    default_message = "conflict"


class RequestTimeout(ExchangerError):
    """The body did not arrive within `server.body_timeout_seconds`."""

    status = 408
    code = "request_timeout"
    default_message = "the request body did not arrive in time"
    oauth_error = "invalid_request"


class HeadersTooLarge(ExchangerError):
    """Request headers over `server.max_header_bytes` (answered by `serving`, not the app)."""

    status = 431
    code = "headers_too_large"
    default_message = "request header fields too large"


class RequestTooLarge(ExchangerError):
    status = 413
    code = "request_too_large"
    default_message = "request body too large"
    oauth_error = "invalid_request"


class RateLimited(ExchangerError):
    status = 429
    code = "rate_limited"
    default_message = "rate limited"


class UpstreamError(ExchangerError):
    status = 502
    code = "upstream_error"
    default_message = "upstream error"
    retryable = False  # a GET may be retried once when GitHub answered 500


class UpstreamUnavailable(ExchangerError):
    status = 503
    code = "upstream_unavailable"
    default_message = "upstream unavailable"


class ConfigError(Exception):
    """The configuration is invalid; `problems` are `FILE:LINE: message` lines.

    `warnings` are the `FILE:LINE: warning: message` lines found on the way:
    an invalid config may also hold a policy that is unsafe, and `check` says so.
    """

    def __init__(self, problems: list[str], warnings: Sequence[str] = ()) -> None:
        self.problems = problems
        self.warnings = tuple(warnings)
        super().__init__("\n".join(problems))
