"""Modal app serving Qwen3-8B with vLLM's OpenAI-compatible server (see README)."""
