"""Prometheus metrics of one server, on a registry of its own (two servers in one process, as in the
tests, never share counters). Served as text on GET /metrics."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mixtune_serve_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=r)
        self.errors = Counter("mixtune_serve_errors", "Requests not served, by kind (bad_request, "
                              "body_too_large, unsupported_media_type, not_ready, overloaded, timeout, internal)",
                              ["kind"], registry=r)
        self.latency = Histogram("mixtune_serve_request_seconds", "Latency of POST /invocations, received to "
                                 "answered", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_inputs = Histogram("mixtune_serve_batch_inputs", "Inputs generated together in one batch",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("mixtune_serve_batch_requests", "Requests merged into one batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.generate_seconds = Histogram("mixtune_serve_generate_seconds", "Time one batch took to generate",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.queue_inputs = Gauge("mixtune_serve_queue_inputs", "Inputs waiting to be generated", registry=r)
        self.model_info = Gauge("mixtune_serve_model_info", "The served model version (1 = serving now)",
                                ["name", "version", "alias"], registry=r)
        self.swaps = Counter("mixtune_serve_model_swaps", "Times a new version was swapped in", registry=r)
        self.load_failures = Counter("mixtune_serve_model_load_failures", "Versions that failed to load, warm "
                                     "or smoke-test (the old version kept serving)", ["version"], registry=r)
        self.load_seconds = Gauge("mixtune_serve_model_load_seconds", "Download + load + warm-up time of the "
                                  "served version", registry=r)

    def served(self, name: str, version: str, alias: str | None, previous: tuple | None) -> None:
        """Mark the version now served; the previous one drops to 0 (kept, so a dashboard sees the swap)."""
        if previous is not None:
            self.model_info.labels(*previous).set(0)
        self.model_info.labels(name, version, alias or "").set(1)

    def text(self) -> bytes:
        return generate_latest(self.registry)
