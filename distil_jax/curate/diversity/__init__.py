"""Diversity stages: duplicate removal, task resampling, length sampling, language balancing."""
