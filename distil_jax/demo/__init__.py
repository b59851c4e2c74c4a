"""The demo's own world (a rule-checked instruction domain) and its results table."""
