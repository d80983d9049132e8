"""``GET /healthz`` (no token) and ``GET /metrics`` (administrators).

``/healthz`` answers ``200 {"status": "ok"}`` when the store answers a cheap read and
``503 {"status": "unavailable"}`` when it does not (or not within a few seconds) — a
load balancer's probe, so it says nothing else and never shows an error.

``/metrics`` is the engine's counters in the Prometheus text format, for a scrape with
the administrator's bearer token (no token: 401; another caller: 403)::

    flowwarden_activations_total{flow, via, outcome}   allowed, denied, not_found, not_live,
                                                       invalid_inputs
    flowwarden_runs_finished_total{flow, status}
    flowwarden_run_duration_seconds{flow}              histogram, from start to end
    flowwarden_runs_in_flight                          gauge

The counters are kept by the engine (:mod:`engine._runtime.telemetry`); a collector on a
registry of this app's own reads them at each scrape, so several engines in one process
never share a metric and prometheus-client is imported only when first scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._model.errors import Unauthenticated
from .._runtime.telemetry import DURATION_BUCKETS, Metrics
from .request import Api, JSONResponse

__all__ = ["health_routes"]

_PROBE_TIMEOUT = 5.0  # seconds the store has to answer a health probe


def health_routes(api: Api) -> list[Route]:
    metrics = api.engine.telemetry.metrics
    registry: Any = None  # made at the first scrape

    async def healthz(request: Request) -> Response:
        try:
            with anyio.fail_after(_PROBE_TIMEOUT):
                await api.engine.store.list_flows()
        except Exception:  # whatever it is, the store did not answer
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def scrape(request: Request) -> Response:
        nonlocal registry
        if not request.headers.get("authorization"):
            raise Unauthenticated("/metrics needs an administrator's bearer token")
        api.admin(request)
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(metrics))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]


class _Collector:
    """prometheus-client's custom-collector protocol over an engine's :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        metrics = self.metrics
        activations = CounterMetricFamily(
            "flowwarden_activations",
            "Activations decided by the gate, by outcome",
            labels=["flow", "via", "outcome"],
        )
        for labels, count in list(metrics.activations.items()):
            activations.add_metric(labels, count)
        yield activations
        finished = CounterMetricFamily(
            "flowwarden_runs_finished", "Runs that ended, by status", labels=["flow", "status"]
        )
        for flow_status, count in list(metrics.finished.items()):
            finished.add_metric(flow_status, count)
        yield finished
        durations = HistogramMetricFamily(
            "flowwarden_run_duration_seconds",
            "How long runs took, from their start to their end",
            labels=["flow"],
        )
        bounds = [*(f"{bound:g}" for bound in DURATION_BUCKETS), "+Inf"]
        for flow, histogram in list(metrics.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, histogram.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([flow], buckets, histogram.total)
        yield durations
        yield GaugeMetricFamily(
            "flowwarden_runs_in_flight", "Runs in flight in this process", metrics.in_flight()
        )
