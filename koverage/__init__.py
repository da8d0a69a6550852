"""Koverage: LLM observability (Beacon) and model underwriting (Underwriter)."""

__version__ = "0.1.0"
