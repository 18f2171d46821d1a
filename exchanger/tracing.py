"""Optional OpenTelemetry tracing: off, and free, unless an OTLP endpoint is configured.

Tracing turns on at start-up when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, `OTEL_SDK_DISABLED` is not
`true`, and the `tracing` extra is installed (`pip install 'exchanger[tracing]'`);
the exporter reads the other standard `OTEL_*` variables itself. Off, `span()`
hands back one shared no-op object.

Span attributes are bounded and never secret: endpoint names, request ids,
statuses, deciders, GitHub operation templates, issuer URLs without their query.
Never a token, a claim value or a secret; exceptions are recorded by class name
only, never by message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from exchanger import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("exchanger.tracing")

Attribute = str | int | float | bool


class Trace(Protocol):
    """What callers may do with a span: enter it, exit it, and add attributes."""

    def __enter__(self) -> Trace: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def set_attribute(self, key: str, value: Attribute) -> None: ...


class _NoTrace:
    """The one no-op span: tracing is off."""

    __slots__ = ()

    def __enter__(self) -> _NoTrace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def set_attribute(self, key: str, value: Attribute) -> None:
        return None

    def end(self, **attributes: Attribute) -> None:
        return None


NOOP = _NoTrace()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def span(name: str, **attributes: Attribute) -> Trace:
    """A child span of the current one, as a context manager; the shared no-op when off."""
    if _tracer is None:
        return NOOP
    return _Trace(_span(_tracer, name, attributes))


def exchange(endpoint: str, request_id: str) -> _Exchange | _NoTrace:
    """Start one exchange's span, current until `.end(status=…, decided_by=…)`."""
    if _tracer is None:
        return NOOP
    return _Exchange(_tracer, endpoint, request_id)


def bare_url(url: str) -> str:
    """The URL without credentials, query or fragment: what a span may name."""
    if _tracer is None:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def configure(
    environ: Mapping[str, str] | None = None, *, exporter: SpanExporter | None = None
) -> bool:
    """Turn tracing on if the environment asks for it (or `exporter` is given); True if on.

    Called from the app's start-up, in each worker; a second call changes nothing.
    `exporter` (tests) exports each span synchronously as it ends.
    """
    global _tracer, _provider  # noqa: PLW0603 - the process-wide tracer, set at start-up
    if _tracer is not None:
        return True
    env = os.environ if environ is None else environ
    if exporter is None and not _wanted(env):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "an OTLP endpoint is set but tracing is not installed: "
            "pip install 'exchanger[tracing]'; tracing stays off"
        )
        return False
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "exchanger"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("exchanger", __version__)
    log.info("tracing on: spans exported over OTLP")
    return True


def shutdown() -> None:
    """Flush and turn tracing off (tests; the provider also flushes at exit)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


@contextmanager
def _span(tracer: Tracer, name: str, attributes: Mapping[str, Attribute]) -> Iterator[Span]:
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            _failed(current, exc.__class__.__name__)
            raise


def _failed(current: Span, kind: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    current.set_attribute("error.type", kind)
    current.set_status(Status(StatusCode.ERROR, kind))


class _Trace:
    """A live span as a `Trace`."""

    __slots__ = ("_manager", "_span")

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._span: Span | None = None

    def __enter__(self) -> _Trace:
        self._span = self._manager.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._manager.__exit__(kind, exc, tb)

    def set_attribute(self, key: str, value: Attribute) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)


class _Exchange:
    """An exchange's span: current from its start until `end()`, in the request's task."""

    __slots__ = ("_span", "_token")

    def __init__(self, tracer: Tracer, endpoint: str, request_id: str) -> None:
        from opentelemetry import context, trace

        attributes = {"endpoint": endpoint, "request_id": request_id}
        self._span = tracer.start_span(f"exchange {endpoint}", attributes=attributes)
        self._token = context.attach(trace.set_span_in_context(self._span))

    def end(self, **attributes: Attribute) -> None:
        from opentelemetry import context

        context.detach(self._token)
        self._span.set_attributes(attributes)
        status = attributes.get("status")
        if isinstance(status, int) and status >= 500:
            _failed(self._span, f"HTTP {status}")
        self._span.end()
