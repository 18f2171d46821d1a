"""exchanger: an OIDC token-exchange gateway."""

__version__ = "0.1.0"
