"""Helpers that build real test inputs (random HF checkpoints) for tests and the demo."""
