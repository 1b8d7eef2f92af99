"""An OpenAI-compatible provider simulator for corral's tests and benchmarks (stdlib only)."""
