"""A deterministic scripted teacher behind a fault-injecting OpenAI-compatible loopback server.

Used by the curate tests, the client benchmark and offline demos; real sockets, no mocks.
"""
