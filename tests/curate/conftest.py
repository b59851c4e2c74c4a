"""Fixtures for curation tests: a real loopback teacher that injects faults."""

from __future__ import annotations

import pytest

from distil_jax.curate.testing.fault_server import FaultPlan, FaultServer


@pytest.fixture
def fault_server():
  """A server whose first attempts of 30% of requests fail in one of eight ways; slow = 1 s."""
  server = FaultServer(
      delay_s=0.005, faults=FaultPlan(fault_rate=0.3, slow_s=1.0, retry_after_s=0.02)
  )
  server.base_url = server.start_in_thread()
  yield server
  server.stop()


@pytest.fixture
def clean_server():
  server = FaultServer(delay_s=0.0)
  server.base_url = server.start_in_thread()
  yield server
  server.stop()
