"""OpenAI-compatible HTTP server over `distil_jax.generate`, with request batching."""

from distil_jax.serve.server import App, ServeConfig, ServerHandle, make_app, serve_forever, start_server

__all__ = ["App", "ServeConfig", "ServerHandle", "make_app", "serve_forever", "start_server"]
