import os
import sys
import tempfile

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `synthetic`, the stand-in data stream


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
  """Runs that resume or repeat a layout compile the same programs: compile each once."""
  path = os.environ.get("DISTIL_JAX_TEST_JAX_CACHE") or os.path.join(
      tempfile.gettempdir(), f"distil-jax-test-jax-cache-{os.getuid()}"
  )
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
