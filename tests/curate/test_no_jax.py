"""Curation must run where JAX is not installed: nothing under distil_jax.curate may import it."""

import os
import subprocess
import sys
import textwrap

from curate.loopback_run import DEMO_CONFIG, REPO

_BLOCK_AND_RUN = textwrap.dedent("""
    import importlib, pkgutil, sys

    class BlockJax:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "flax", "jaxlib"):
                raise ImportError(f"curation imported {name}")
            return None

    sys.meta_path.insert(0, BlockJax())
    import distil_jax.curate
    for info in pkgutil.walk_packages(distil_jax.curate.__path__, "distil_jax.curate."):
        importlib.import_module(info.name)
    importlib.import_module("distil_jax.commands.curate")

    from distil_jax.curate.testing.fault_server import FaultServer
    from distil_jax import cli
    server = FaultServer()
    url = server.start_in_thread()
    with open(sys.argv[2], "w") as f:
        f.write('{"instruction": "Solve 2 + 2."}\\n{"instruction": "Why is grass green?"}\\n')
    code = cli.main(["curate", "--config", sys.argv[1], "--workdir", sys.argv[3], "--input", sys.argv[2],
                     f"--config.endpoints.teacher.base_url={url}", f"--config.endpoints.student.base_url={url}"])
    server.stop()
    assert code == 0, code
    assert not any(m.split(".")[0] in ("jax", "flax", "jaxlib") for m in sys.modules)
    print("OK")
""")


def test_curate_package_and_a_pipeline_run_without_importing_jax(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "-c",
          _BLOCK_AND_RUN,
          DEMO_CONFIG,
          str(tmp_path / "seeds.jsonl"),
          str(tmp_path / "work"),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=60,
      env={**os.environ, "PYTHONPATH": REPO},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("OK")
  assert (tmp_path / "work" / "manifest.json").exists()
