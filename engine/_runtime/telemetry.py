"""Traces and metrics of an engine's activations and runs.

Traces use OpenTelemetry's API when it is installed (``flowwarden[otel]``) and go
wherever the application's tracer provider sends them: each run is a ``flow.run`` span,
each executed block a ``flow.block`` span under it, and a Call Flow child's run a span
under the calling block's. The tracer is looked up when a run starts, so a provider
configured after ``import engine`` is used. When the run span does not record (no SDK
configured, or the trace is sampled out) no block span is made at all: that costs one
span per run, nothing per block.

Metrics are plain counters kept here, cheap to move (a dict entry per label set); the
HTTP layer renders them in the Prometheus text format when ``/metrics`` is scraped, so
no metrics library is imported before that.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any

from .._model.errors import ActivationDenied, ActivationError, FlowNotFound
from .._model.types import RunStatus
from .._store.base import Store
from .gate import Activation
from .interpreter import RunState

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider
else:
    TracerProvider = Any  # the API is optional: the name is for annotations

__all__ = [
    "DURATION_BUCKETS",
    "Metrics",
    "RunSpan",
    "Telemetry",
    "TracerProvider",
    "continue_trace",
]

UNKNOWN_FLOW = "unknown"
"""The ``flow`` label of an activation refused for a flow that does not exist: a caller
must not be able to make up label values (and learn nothing of which flows exist)."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0)  # fmt: skip
"""Upper bounds, in seconds, of the run-duration histogram's buckets (``+Inf`` beyond)."""

_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"  # the API loads the provider it names
_otel: Any = None  # the opentelemetry.trace module once looked for; False: not installed


def _trace_api(provider_named: bool | None = None) -> Any:
    """OpenTelemetry's trace API, or ``False`` when it is not installed (imported on the
    first run, not with the engine: it is not free to import).

    Nor is it imported while nothing else has imported it and no provider is named in
    the environment: then no SDK is configured and no span is current, so no run could
    be traced (``False``, not remembered, so that an SDK configured later is found).
    ``provider_named`` is whether the environment names one, when the caller has
    looked already (a missing variable costs a raised and caught ``KeyError``)."""
    global _otel
    if _otel is None:
        if provider_named is None:
            provider_named = _PROVIDER_VARIABLE in os.environ
        if not provider_named and "opentelemetry.trace" not in sys.modules:
            return False
        try:
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - the test extra installs it
            _otel = False
        else:
            _otel = trace
    return _otel


def _no_sdk(trace: Any) -> tuple[type, ...]:
    """The providers of the API alone, whose spans never record: the global default
    until an SDK's provider is set (``get_tracer_provider`` then returns that one), and
    the no-op provider."""
    return (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


_NO_TRACEPARENT = contextlib.nullcontext()


def continue_trace(carrier: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
    """Within this block, runs started continue the trace of the W3C ``traceparent``
    header in ``carrier`` (an HTTP request's headers), if there is one.

    Without one (most requests) the block is entered through a context manager that
    does nothing, one for all of them: a generator's costs about 0.8 µs more."""
    if "traceparent" not in carrier or not _trace_api():
        return _NO_TRACEPARENT
    return _continued(carrier)


@contextlib.contextmanager
def _continued(carrier: Mapping[str, str]) -> Iterator[None]:
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


class RunSpan:
    """The ``flow.run`` span of one run, current while the run runs in its task."""

    __slots__ = ("_context", "_token", "span", "tracer")
    current = True  # made current when entered: the run keeps to the task it began in

    def __init__(self, span: Span, tracer: Tracer | None) -> None:
        from opentelemetry import context

        self.span = span
        self.tracer = tracer  # for block spans: only when the run's span records
        self._context = context
        self._token: Any = None

    def __enter__(self) -> RunSpan:
        context = self._context
        self._token = context.attach(_otel.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.detach(self._token)

    def end(self, state: RunState) -> None:
        span = self.span
        if self.tracer is not None:
            status = state.status
            if not status.finished and not state.abandoned:  # the engine will cancel it
                status = RunStatus.CANCELLED
            span.set_attribute("flowwarden.status", status.value)
            if status is RunStatus.FAILED:
                from opentelemetry.trace import StatusCode

                code = state.error.code if state.error is not None else None
                span.set_status(StatusCode.ERROR, code)
        span.end()


class _Untraced:
    """The run span without OpenTelemetry's API: nothing at all."""

    __slots__ = ()
    tracer = None
    current = False

    def __enter__(self) -> _Untraced:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def end(self, state: RunState) -> None:
        pass


_UNTRACED = _Untraced()


class _Histogram:
    """Counts per bucket (not cumulative) and the sum, as Prometheus reports them."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value


class Metrics:
    """An engine's counters since it was made. Label sets are tuples, in the order of
    the metric's labels (see ``engine._http.health`` for their names)."""

    def __init__(self, in_flight: Callable[[], int]) -> None:
        self.activations: dict[tuple[str, str, str], int] = {}  # (flow, via, outcome)
        self.finished: dict[tuple[str, str], int] = {}  # (flow, status)
        self.durations: dict[str, _Histogram] = {}  # by flow
        self.in_flight = in_flight

    def activation(self, flow: str, via: str, outcome: str) -> None:
        counts = self.activations
        key = (flow, via, outcome)
        counts[key] = counts.get(key, 0) + 1

    def run_finished(self, flow: str, status: str, seconds: float | None) -> None:
        counts = self.finished
        key = (flow, status)
        counts[key] = counts.get(key, 0) + 1
        if seconds is not None:
            histogram = self.durations.get(flow)
            if histogram is None:
                histogram = self.durations[flow] = _Histogram()
            histogram.observe(seconds)


class Telemetry:
    """An engine's traces and metrics: the gate tells it of each decision, the
    interpreter asks it for each run's span, the engine tells it of each run's end."""

    def __init__(
        self,
        store: Store,
        active: Sized,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.metrics = Metrics(active.__len__)
        self._store = store
        self._provider = tracer_provider
        self._cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)
        # the environment as the engine was made: whether it names a tracer provider
        self._provider_named = _PROVIDER_VARIABLE in os.environ

    # -- activations (a gate observer) ---------------------------------------------------

    def allowed(self, activation: Activation) -> None:
        self.metrics.activation(activation.flow, activation.via, "allowed")

    async def refused(self, activation: Activation, refusal: ActivationError) -> None:
        """Count a refusal; a denial is also an ``activation.denied`` event on the
        current span (the calling block's, say)."""
        flow = activation.flow
        if isinstance(refusal, ActivationDenied):
            outcome = "denied"
            if refusal.version is None and not await _exists(self._store, flow):
                flow = UNKNOWN_FLOW
            trace = _trace_api(self._provider_named)
            if trace:
                span = trace.get_current_span()
                if span.is_recording():
                    span.add_event(
                        "activation.denied",
                        {
                            "flowwarden.flow": activation.flow,
                            "flowwarden.via": activation.via,
                            "flowwarden.reason": refusal.reason,
                        },
                    )
        else:
            outcome = refusal.code.removeprefix("flow_")  # not_found, not_live, invalid_inputs
            if isinstance(refusal, FlowNotFound):
                flow = UNKNOWN_FLOW
        self.metrics.activation(flow, activation.via, outcome)

    # -- runs ----------------------------------------------------------------------------

    def start_run(self, state: RunState) -> RunSpan | _Untraced:
        """The run's span, from the tracer provider of this moment."""
        trace = _trace_api(self._provider_named)
        if not trace:
            return _UNTRACED
        provider = self._provider or trace.get_tracer_provider()
        # no SDK: the span would be the current one's context or nothing, never
        # recording; with no caller's trace to pass on, skip making it at all
        no_sdk = isinstance(provider, _no_sdk(trace))
        if no_sdk and not trace.get_current_span().get_span_context().is_valid:
            return _UNTRACED
        cached, tracer = self._cached
        if provider is not cached:
            tracer = provider.get_tracer("flowwarden")
            self._cached = (provider, tracer)
        span = tracer.start_span("flow.run")
        if not span.is_recording():  # no SDK, or sampled out: no block spans either
            if not span.get_span_context().is_valid:
                return _UNTRACED  # not even a caller's trace to pass on to children
            return RunSpan(span, None)
        header = state.header
        span.set_attributes(
            {
                "flowwarden.flow": header.flow,
                "flowwarden.version": header.version,
                "flowwarden.run_id": header.run_id,
                "flowwarden.via": header.via,
            }
        )
        user = header.identity.user_id
        if user is not None:
            span.set_attribute("enduser.id", user)
        return RunSpan(span, tracer)

    def run_ended(self, state: RunState) -> None:
        """Count a run that ended here (not one handed back to another process)."""
        if state.abandoned or not state.status.finished:
            return
        started = state.started_at or state.header.created_at
        seconds = (state.finished_at or time.time()) - started
        # the status itself is its label: a StrEnum member is the string
        self.metrics.run_finished(state.header.flow, state.status, seconds if seconds > 0 else 0.0)


async def _exists(store: Store, flow: str) -> bool:
    """Whether the flow exists (a denial's label); a store failure counts as not."""
    try:
        return await store.select_version(flow, None) is not None
    except Exception:
        return False
