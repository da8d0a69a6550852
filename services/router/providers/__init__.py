"""Providers the router streams answers from."""

from services.router.providers._base import (
    FinishReport,
    Provider,
    ProviderCall,
    ProviderEvent,
    TextChunk,
    UsageReport,
)
from services.router.providers._openai_compatible import OpenAICompatibleProvider
from services.router.providers._simulator import (
    Persona,
    SimulatorProvider,
    count_tokens,
    load_personas,
)

__all__ = [
    "FinishReport",
    "OpenAICompatibleProvider",
    "Persona",
    "Provider",
    "ProviderCall",
    "ProviderEvent",
    "SimulatorProvider",
    "TextChunk",
    "UsageReport",
    "count_tokens",
    "load_personas",
]
