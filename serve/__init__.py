"""`vseam serve`: validate head profiles, start vLLM's OpenAI server with them, route requests to profiles.

`serve.cli` (the command), `serve.resolve` (request -> profile, cache salt), `serve.routing` (`auto`: semantic level
of the question), `serve.middleware` (the ASGI middleware vLLM loads), `serve.metrics` (Prometheus counters).
"""
