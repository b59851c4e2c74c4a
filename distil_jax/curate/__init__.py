"""Teacher-agent curation: seed instructions -> curated chat shards, over OpenAI-compatible HTTP.

This package never imports JAX, flax or jaxlib (it must run on a box without them). Entry points:
`distil_jax.curate.pipeline.run_pipeline` and the `distil-jax curate` command.
"""
