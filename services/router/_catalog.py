"""The model catalog (a YAML data file) and exact cost arithmetic."""

import dataclasses
import decimal
import pathlib
from decimal import Decimal

import yaml

from services.router._errors import ModelNotFoundError

DEFAULT_CATALOG_PATH = pathlib.Path(__file__).with_name("catalog.yaml")
PROVIDERS = frozenset({"openrouter", "modal", "openai_compatible", "simulator"})

# Models named in KOVERAGE_OPENAI_COMPATIBLE_MODELS get this id prefix and
# context window; a catalog entry sets both per model instead.
ENV_MODEL_ID_PREFIX = "openai_compatible/"
_ENV_MODEL_CONTEXT_WINDOW_TOKENS = 8192

_MILLION = Decimal(1_000_000)
# Costs are kept to a billionth of a dollar; finer digits are noise.
_COST_QUANTUM = Decimal("0.000000001")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One catalogued model."""

    id: str
    provider: str
    provider_model: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    gpu_usd_per_second: Decimal | None
    context_window_tokens: int
    fallback_models: tuple[str, ...] = ()
    first_token_timeout_s: float | None = None
    persona: str = ""
    base_url: str = ""
    api_key_env: str = ""

    @property
    def simulated(self) -> bool:
        return self.provider == "simulator"

    @property
    def provider_key(self) -> str:
        """The provider instance that serves this model: the provider name, or
        `openai_compatible@<base_url>` for an entry with its own base URL."""
        return f"{self.provider}@{self.base_url}" if self.base_url else self.provider

    def cost_usd(
        self, input_tokens: int, output_tokens: int, duration_s: float
    ) -> Decimal:
        """Exact cost of one call: per-token prices, or GPU-seconds when set."""
        if self.gpu_usd_per_second is not None:
            cost = self.gpu_usd_per_second * Decimal(repr(duration_s))
        else:
            cost = (
                Decimal(input_tokens) * self.input_usd_per_mtok
                + Decimal(output_tokens) * self.output_usd_per_mtok
            ) / _MILLION
        return cost.quantize(_COST_QUANTUM, rounding=decimal.ROUND_HALF_EVEN)


class Catalog:
    """Read-only lookup of models by id."""

    def __init__(self, entries: list[ModelEntry]) -> None:
        self._entries = {e.id: e for e in entries}
        if len(self._entries) != len(entries):
            raise ValueError("catalog has duplicate model ids")
        for entry in entries:
            for fallback in entry.fallback_models:
                if fallback not in self._entries:
                    raise ValueError(
                        f"catalog model {entry.id!r} falls back to unknown {fallback!r}"
                    )

    def get(self, model_id: str) -> ModelEntry:
        """Returns the entry for `model_id`.

        Raises:
            ModelNotFoundError: no such model; the message lists a few known ids.
        """
        entry = self._entries.get(model_id)
        if entry is None:
            known = ", ".join(sorted(self._entries)[:8])
            raise ModelNotFoundError(
                f"model {model_id!r} is not in the catalog; known models include "
                f"{known} (ListModels shows all)"
            )
        return entry

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda e: e.id))

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._entries

    def with_models(self, entries: list[ModelEntry]) -> "Catalog":
        """A new catalog with `entries` added.

        Raises:
            ValueError: an added id is already in the catalog.
        """
        return Catalog([*self._entries.values(), *entries])


def openai_compatible_models(names: str) -> list[ModelEntry]:
    """Entries for the models KOVERAGE_OPENAI_COMPATIBLE_MODELS names.

    Each comma-separated name (as the server knows it, such as `llama3.2` or
    `qwen2.5:7b` for Ollama) becomes the model `openai_compatible/<name>`,
    served at KOVERAGE_OPENAI_COMPATIBLE_BASE_URL.

    Known limitation: these models are unpriced (cost 0) and get a context
    window of 8192 tokens whatever the server allows, because a name carries
    neither. A catalog entry with provider `openai_compatible` sets both.

    Args:
        names: Comma-separated model names; blanks are skipped.

    Raises:
        ValueError: a name contains whitespace.
    """
    entries = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if any(c.isspace() for c in name):
            raise ValueError(
                f"KOVERAGE_OPENAI_COMPATIBLE_MODELS entry {name!r} contains "
                "whitespace; separate model names with commas"
            )
        entries.append(
            ModelEntry(
                id=ENV_MODEL_ID_PREFIX + name,
                provider="openai_compatible",
                provider_model=name,
                input_usd_per_mtok=Decimal(0),
                output_usd_per_mtok=Decimal(0),
                gpu_usd_per_second=None,
                context_window_tokens=_ENV_MODEL_CONTEXT_WINDOW_TOKENS,
            )
        )
    return entries


def load_catalog(path: str | pathlib.Path | None = None) -> Catalog:
    """Loads and validates a catalog file (the shipped one by default).

    Raises:
        ValueError: the file is malformed; the message names the entry and field.
    """
    path = pathlib.Path(path) if path else DEFAULT_CATALOG_PATH
    document = yaml.safe_load(path.read_text()) or {}
    rows = document.get("models")
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a top-level 'models' list")
    return Catalog([_parse_entry(path, row) for row in rows])


def _parse_entry(path: pathlib.Path, row: dict) -> ModelEntry:
    model_id = row.get("id")
    if not model_id or not isinstance(model_id, str):
        raise ValueError(f"{path}: a model has no string 'id'")
    provider = row.get("provider")
    if provider not in PROVIDERS:
        raise ValueError(
            f"{path}: model {model_id!r} has provider {provider!r}; "
            f"allowed: {sorted(PROVIDERS)}"
        )

    def price(field: str) -> Decimal | None:
        raw = row.get(field)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise ValueError(
                f"{path}: model {model_id!r} field {field} must be a quoted "
                f"decimal string, got {raw!r}"
            )
        try:
            value = Decimal(raw)
        except decimal.InvalidOperation:
            raise ValueError(f"{path}: model {model_id!r} {field}={raw!r}") from None
        if value < 0:
            raise ValueError(f"{path}: model {model_id!r} {field} is negative")
        return value

    gpu = price("gpu_usd_per_second")
    window = row.get("context_window_tokens")
    if not isinstance(window, int) or window <= 0:
        raise ValueError(
            f"{path}: model {model_id!r} needs a positive context_window_tokens"
        )
    if provider == "simulator" and not row.get("persona"):
        raise ValueError(f"{path}: simulator model {model_id!r} needs a persona")
    base_url, api_key_env = _endpoint_of(path, model_id, provider, row)
    return ModelEntry(
        id=model_id,
        provider=provider,
        provider_model=row.get("provider_model") or model_id,
        input_usd_per_mtok=price("input_usd_per_mtok") or Decimal(0),
        output_usd_per_mtok=price("output_usd_per_mtok") or Decimal(0),
        gpu_usd_per_second=gpu,
        context_window_tokens=window,
        fallback_models=tuple(row.get("fallback_models") or ()),
        first_token_timeout_s=row.get("first_token_timeout_s"),
        persona=row.get("persona", ""),
        base_url=base_url,
        api_key_env=api_key_env,
    )


def _endpoint_of(
    path: pathlib.Path, model_id: str, provider: str, row: dict
) -> tuple[str, str]:
    """An entry's own `base_url` and `api_key_env`, validated."""
    base_url = row.get("base_url") or ""
    api_key_env = row.get("api_key_env") or ""
    if not isinstance(base_url, str) or not isinstance(api_key_env, str):
        raise ValueError(
            f"{path}: model {model_id!r} base_url and api_key_env must be strings"
        )
    if base_url and provider != "openai_compatible":
        raise ValueError(
            f"{path}: model {model_id!r} sets base_url, which only provider "
            f"openai_compatible takes ({provider} has its own KOVERAGE_* URL)"
        )
    if api_key_env and not base_url:
        raise ValueError(
            f"{path}: model {model_id!r} sets api_key_env without a base_url; "
            "the shared server's key is KOVERAGE_OPENAI_COMPATIBLE_API_KEY"
        )
    return base_url.rstrip("/"), api_key_env
