"""Qwen/Qwen3-8B behind vLLM's OpenAI-compatible `/v1` API on a Modal GPU.

Deploy with `modal deploy -m modal_app.qwen3_vllm`. The router reaches the
app like any OpenAI-compatible provider through KOVERAGE_MODAL_BASE_URL
(`https://<workspace>--<app>-serve.modal.run/v1`) and KOVERAGE_MODAL_API_KEY.

Deploy-time settings are read from the environment of the machine running
`modal deploy` (they shape the deployed function, not the request path):

    KOVERAGE_MODAL_APP_NAME         Modal app name (default koverage-qwen3)
    KOVERAGE_MODAL_GPU              GPU type (default L40S, 48 GB)
    KOVERAGE_MODAL_IDLE_TIMEOUT_S   seconds idle before scaling to zero (300)
    KOVERAGE_MODAL_MAX_CONTAINERS   most GPU containers at once (2)
    KOVERAGE_MODAL_FAST_BOOT        1: skip CUDA graph capture, faster cold
                                    starts, slower decoding (default 1)

Known limitation: Modal imports this module again inside the container,
where those variables are unset; that is harmless because only the deployed
function's registration uses them, but `modal serve` and `modal deploy` must
run with the same environment to describe the same app.
"""

import os
import subprocess

import modal

MODEL_NAME = "Qwen/Qwen3-8B"
"""Hugging Face repository of the served model."""

SERVED_MODEL_NAMES = ("Qwen/Qwen3-8B", "qwen3-8b")
"""Names the `/v1` API accepts in the `model` field."""

VLLM_VERSION = "0.34.0"
"""vLLM release installed in the image (pulls a CUDA build of torch)."""

VLLM_PORT = 8000
"""Port vLLM listens on inside the container."""

MAX_MODEL_LEN_TOKENS = 32768
"""Context window served: Qwen3-8B's native length without RoPE scaling."""

API_KEY_SECRET = "koverage-modal-api-key"
"""Modal Secret holding KOVERAGE_MODAL_API_KEY, the key vLLM requires."""

API_KEY_ENV = "KOVERAGE_MODAL_API_KEY"
"""Variable of that Secret (the same name the router reads)."""

VLLM_API_KEY_ENV = "VLLM_API_KEY"
"""Variable vLLM reads its required key from when `--api-key` is not given;
passing the key this way keeps it out of the process list."""

HEALTH_PATH = "/health"
"""vLLM's own health route on VLLM_PORT: 200 once the model is loaded. Its
API-key check guards only `/v1/*`, so the route needs no key. The app
defines no route of its own: Modal's web server forwards every path."""

HF_CACHE_PATH = "/root/.cache/huggingface"
"""Mount point of the weights cache Volume."""

VLLM_CACHE_PATH = "/root/.cache/vllm"
"""Mount point of vLLM's compilation cache Volume."""

STARTUP_TIMEOUT_S = 20 * 60
"""Longest a container may take to start (Modal's container startup timeout
and the web server's wait for VLLM_PORT): the very first start downloads
about 16 GB of weights into the Volume."""

REQUEST_TIMEOUT_S = 10 * 60
"""Longest one request may run."""

MAX_CONCURRENT_REQUESTS = 64
"""Requests one container takes at once; vLLM batches them on the GPU."""

_SUPPORTED_GPUS = ("L40S", "A100-40GB", "A100-80GB", "H100", "H200")


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside [{low}, {high}]")
    return value


def _env_gpu() -> str:
    gpu = os.environ.get("KOVERAGE_MODAL_GPU", "") or "L40S"
    if gpu not in _SUPPORTED_GPUS:
        # Qwen3-8B in bf16 needs ~16.4 GB for weights plus KV cache for a
        # 32k context; a 24 GB card leaves too little.
        raise ValueError(
            f"KOVERAGE_MODAL_GPU={gpu!r} is not one of {', '.join(_SUPPORTED_GPUS)}"
        )
    return gpu


APP_NAME = os.environ.get("KOVERAGE_MODAL_APP_NAME", "") or "koverage-qwen3"
"""Modal app name; the web URL is derived from it."""

GPU = _env_gpu()
"""GPU type of each container."""

IDLE_TIMEOUT_S = _env_int("KOVERAGE_MODAL_IDLE_TIMEOUT_S", 300, 2, 3600)
"""Seconds a container stays up without requests before it scales to zero
(Modal accepts 2 to 3600)."""

MAX_CONTAINERS = _env_int("KOVERAGE_MODAL_MAX_CONTAINERS", 2, 1, 100)
"""Most containers (each one GPU) running at once."""

FAST_BOOT = os.environ.get("KOVERAGE_MODAL_FAST_BOOT", "1") not in {"0", "false"}
"""Skip CUDA graph capture: shorter cold starts, lower decode throughput."""


def vllm_environment(api_key: str, base: dict[str, str]) -> dict[str, str]:
    """Environment of the vLLM server: `base` plus the key it requires.

    Args:
        api_key: the key every `/v1` request must present as a Bearer token
            (vLLM reads it from VLLM_API_KEY). `/health` stays open for the
            platform's and the router's checks.
        base: the environment to extend (the container's own).

    Raises:
        ValueError: `api_key` is empty; an open GPU endpoint would bill
            anyone who finds its URL.
    """
    if not api_key:
        raise ValueError(
            f"{API_KEY_ENV} is empty: create the Modal Secret {API_KEY_SECRET!r} "
            f"with {API_KEY_ENV}=<key> before deploying"
        )
    return {**base, VLLM_API_KEY_ENV: api_key}


def vllm_command() -> list[str]:
    """Command line of the vLLM OpenAI-compatible server.

    It carries no secret: the API key goes in through `vllm_environment`.
    """
    command = [
        "vllm",
        "serve",
        MODEL_NAME,
        "--served-model-name",
        *SERVED_MODEL_NAMES,
        "--host",
        "0.0.0.0",
        "--port",
        str(VLLM_PORT),
        "--max-model-len",
        str(MAX_MODEL_LEN_TOKENS),
        "--gpu-memory-utilization",
        "0.90",
        "--enable-prefix-caching",
        # Qwen3 thinks in <think> blocks; the parser moves them into
        # `reasoning_content` so `content` holds only the answer.
        "--reasoning-parser",
        "qwen3",
        "--max-num-seqs",
        str(MAX_CONCURRENT_REQUESTS),
    ]
    if FAST_BOOT:
        command.append("--enforce-eager")
    return command


image = (
    modal.Image.debian_slim(python_version="3.12")
    .pip_install(f"vllm=={VLLM_VERSION}")
    .env(
        {
            "HF_HOME": HF_CACHE_PATH,
            # Weights come from the Volume after the first start.
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
    )
)

hf_cache = modal.Volume.from_name("koverage-hf-cache", create_if_missing=True)
vllm_cache = modal.Volume.from_name("koverage-vllm-cache", create_if_missing=True)
api_key_secret = modal.Secret.from_name(API_KEY_SECRET, required_keys=[API_KEY_ENV])

FUNCTION_OPTIONS: dict = {
    "image": image,
    "gpu": GPU,
    "volumes": {HF_CACHE_PATH: hf_cache, VLLM_CACHE_PATH: vllm_cache},
    "secrets": [api_key_secret],
    "scaledown_window": IDLE_TIMEOUT_S,
    "min_containers": 0,
    "max_containers": MAX_CONTAINERS,
    "timeout": REQUEST_TIMEOUT_S,
    # Without it Modal allows `timeout` (10 min) to start, less than the web
    # server's wait below; a first start that downloads weights needs more.
    "startup_timeout": STARTUP_TIMEOUT_S,
}
"""Everything `app.function` receives; min_containers=0 is scale to zero."""

app = modal.App(APP_NAME)


@app.function(**FUNCTION_OPTIONS)
@modal.concurrent(max_inputs=MAX_CONCURRENT_REQUESTS)
@modal.web_server(port=VLLM_PORT, startup_timeout=STARTUP_TIMEOUT_S)
def serve() -> None:
    """Starts vLLM; Modal routes HTTPS traffic to it once the port accepts."""
    start_vllm()


def start_vllm() -> subprocess.Popen:
    """Starts the vLLM server with the key from the Modal Secret.

    Raises:
        ValueError: the Secret's KOVERAGE_MODAL_API_KEY is empty.
    """
    environment = vllm_environment(os.environ.get(API_KEY_ENV, ""), dict(os.environ))
    return subprocess.Popen(vllm_command(), env=environment)
