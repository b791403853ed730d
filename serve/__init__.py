"""`vseam serve`: validate head profiles, start vLLM's OpenAI server with them, route requests to profiles.

`vseam.serve.cli` (the command), `vseam.serve.resolve` (request -> profile, cache salt), `vseam.serve.routing` (`auto`: semantic level
of the question), `vseam.serve.middleware` (the ASGI middleware vLLM loads), `vseam.serve.metrics` (Prometheus counters).
"""
