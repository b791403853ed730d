"""Everything that touches vLLM internals: the plugin entry point and the head-output scaling patch."""
