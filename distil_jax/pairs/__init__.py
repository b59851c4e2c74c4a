"""Preference pairs for DPO: the pair record (`format`, stdlib only), building pairs from a
student's own answers (`build`), tokenising them (`tokenize`), the reference model's log-probs
(`reference`) and the checkpointable pair-batch iterator (`pipeline`). Nothing is imported here,
so curation can use `distil_jax.pairs.format` without JAX."""
