"""Prometheus text-format metrics of a server: requests by route and status, tokens, queue depth,
requests in flight, batches, and a request-latency histogram."""

from __future__ import annotations

import bisect
import collections

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


class Metrics:

  def __init__(self):
    self.requests = collections.Counter()  # (route, status) -> count
    self.prompt_tokens = 0
    self.completion_tokens = 0
    self.latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
    self.latency_sum = 0.0

  def request(self, path: str, status: int, seconds: float) -> None:
    route = (
        path
        if path in ROUTES
        else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
    )
    self.requests[(route, status)] += 1
    if route in ROUTES[:2]:
      self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
      self.latency_sum += seconds

  def tokens(self, prompt: int, completion: int) -> None:
    self.prompt_tokens += prompt
    self.completion_tokens += completion

  def render(self, *, queue_depth: int, in_flight: int, stats) -> str:
    lines = [
        "# HELP distil_jax_requests_total HTTP requests answered, by route and status.",
        "# TYPE distil_jax_requests_total counter",
    ]
    for (route, status), count in sorted(self.requests.items()):
      lines.append(f'distil_jax_requests_total{{route="{route}",status="{status}"}} {count}')
    for name, kind, value, help_text in (
        (
            "prompt_tokens_total",
            "counter",
            self.prompt_tokens,
            "Prompt tokens of answered requests.",
        ),
        ("generation_tokens_total", "counter", self.completion_tokens, "New tokens generated."),
        ("batches_total", "counter", stats.batches, "Generate calls run on the device."),
        ("queue_depth", "gauge", queue_depth, "Rows waiting for a batch."),
        ("requests_in_flight", "gauge", in_flight, "Generation requests being answered."),
    ):
      lines += [
          f"# HELP distil_jax_{name} {help_text}",
          f"# TYPE distil_jax_{name} {kind}",
          f"distil_jax_{name} {value}",
      ]
    lines += [
        "# HELP distil_jax_request_latency_seconds Generation request latency.",
        "# TYPE distil_jax_request_latency_seconds histogram",
    ]
    total = 0
    for bound, count in zip((*LATENCY_BUCKETS_S, "+Inf"), self.latency_counts):
      total += count
      lines.append(f'distil_jax_request_latency_seconds_bucket{{le="{bound}"}} {total}')
    lines += [
        f"distil_jax_request_latency_seconds_sum {self.latency_sum:.6f}",
        f"distil_jax_request_latency_seconds_count {total}",
    ]
    return "\n".join(lines) + "\n"
