"""The Modal app module imports offline and describes the intended deployment."""

import importlib.util
import pathlib
import re

import pytest

modal = pytest.importorskip("modal")

_MODULE_PATH = (
    pathlib.Path(__file__).resolve().parents[2] / "modal_app" / "qwen3_vllm.py"
)


def _load(monkeypatch, **env: str):
    """Executes the app module afresh under `env` (no network, no token).

    The module's calls to `modal.web_server` and `Image.pip_install` are
    recorded on its `recorded` attribute, since Modal keeps neither the web
    server's port nor the image's packages where a test can read them.
    """
    for name in (
        "KOVERAGE_MODAL_APP_NAME",
        "KOVERAGE_MODAL_GPU",
        "KOVERAGE_MODAL_IDLE_TIMEOUT_S",
        "KOVERAGE_MODAL_MAX_CONTAINERS",
        "KOVERAGE_MODAL_FAST_BOOT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    recorded: dict[str, list] = {"web_server": [], "pip_install": []}
    web_server, pip_install = modal.web_server, modal.Image.pip_install

    def recording_web_server(*args, **kwargs):
        recorded["web_server"].append((args, kwargs))
        return web_server(*args, **kwargs)

    def recording_pip_install(self, *packages, **kwargs):
        recorded["pip_install"].append(packages)
        return pip_install(self, *packages, **kwargs)

    monkeypatch.setattr(modal, "web_server", recording_web_server)
    monkeypatch.setattr(modal.Image, "pip_install", recording_pip_install)
    spec = importlib.util.spec_from_file_location("qwen3_vllm_under_test", _MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.recorded = recorded
    return module


def test_package_module_imports_and_registers_a_web_function():
    from modal_app import qwen3_vllm

    assert isinstance(qwen3_vllm.app, modal.App)
    assert isinstance(qwen3_vllm.serve, modal.Function)
    assert qwen3_vllm.serve._is_web_endpoint()


def test_defaults_fit_qwen3_8b_and_scale_to_zero(monkeypatch):
    app = _load(monkeypatch)

    assert app.MODEL_NAME == "Qwen/Qwen3-8B"
    assert app.GPU == "L40S"
    options = app.FUNCTION_OPTIONS
    assert options["gpu"] == "L40S"
    assert options["min_containers"] == 0
    assert options["scaledown_window"] == app.IDLE_TIMEOUT_S == 300
    assert options["timeout"] == app.REQUEST_TIMEOUT_S
    assert options["image"] is app.image
    assert options["secrets"] == [app.api_key_secret]
    # The registered function carries the same GPU, volumes and secret.
    spec = app.serve._spec_
    assert spec.gpus == "L40S"
    assert set(spec.volumes) == {app.HF_CACHE_PATH, app.VLLM_CACHE_PATH}
    assert len(spec.secrets) == 1


def test_weights_are_cached_in_a_volume(monkeypatch):
    app = _load(monkeypatch)

    volumes = app.FUNCTION_OPTIONS["volumes"]
    assert app.HF_CACHE_PATH == "/root/.cache/huggingface"
    assert isinstance(volumes[app.HF_CACHE_PATH], modal.Volume)
    assert isinstance(volumes[app.VLLM_CACHE_PATH], modal.Volume)


def test_vllm_command_serves_openai_api_without_a_secret_in_argv(monkeypatch):
    app = _load(monkeypatch)

    command = app.vllm_command()

    assert command[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    flags = {
        command[i]: command[i + 1]
        for i in range(3, len(command) - 1)
        if command[i].startswith("--")
    }
    # The key goes in through VLLM_API_KEY, never the process list.
    assert "--api-key" not in command
    assert flags["--port"] == str(app.VLLM_PORT) == "8000"
    assert flags["--host"] == "0.0.0.0"
    assert int(flags["--max-model-len"]) == 32768
    assert 0.5 < float(flags["--gpu-memory-utilization"]) <= 0.95
    assert "qwen3-8b" in command and "--enforce-eager" in command


def test_vllm_gets_the_key_through_its_environment(monkeypatch):
    app = _load(monkeypatch)

    environment = app.vllm_environment("s3cret", {"PATH": "/usr/bin"})

    assert environment == {"PATH": "/usr/bin", "VLLM_API_KEY": "s3cret"}


def test_vllm_environment_refuses_an_empty_key(monkeypatch):
    app = _load(monkeypatch)

    with pytest.raises(ValueError, match="KOVERAGE_MODAL_API_KEY is empty"):
        app.vllm_environment("", {})


def test_start_vllm_passes_the_key_in_its_environment(monkeypatch):
    app = _load(monkeypatch)
    started = []
    monkeypatch.setattr(
        app.subprocess, "Popen", lambda command, env: started.append((command, env))
    )
    monkeypatch.setenv("KOVERAGE_MODAL_API_KEY", "from-the-secret")

    app.start_vllm()

    ((command, env),) = started
    assert command == app.vllm_command()
    assert env["VLLM_API_KEY"] == "from-the-secret"
    assert "from-the-secret" not in command


def test_web_server_exposes_vllm_health_route_with_a_long_startup(monkeypatch):
    app = _load(monkeypatch)

    # vLLM serves /health itself on VLLM_PORT; the web server forwards that
    # port, so the route is there without an app-defined handler.
    ((args, kwargs),) = app.recorded["web_server"]
    assert (args or (kwargs["port"],))[0] == app.VLLM_PORT
    assert app.HEALTH_PATH == "/health"
    assert kwargs["startup_timeout"] == app.STARTUP_TIMEOUT_S == 1200
    info = app.serve.info()
    # Modal's own container startup limit must not cut the web server's wait.
    assert info.startup_timeout == app.STARTUP_TIMEOUT_S
    assert info.timeout == app.REQUEST_TIMEOUT_S
    # No Modal proxy auth: vLLM's API key is the gate, /health stays open.
    assert info.web_info.unauthenticated is True


def test_one_container_takes_as_many_requests_as_vllm_batches(monkeypatch):
    app = _load(monkeypatch)

    concurrency = app.serve.info().concurrency_info
    assert concurrency.max_inputs == app.MAX_CONCURRENT_REQUESTS == 64
    command = app.vllm_command()
    assert command[command.index("--max-num-seqs") + 1] == "64"


def test_image_pins_vllm(monkeypatch):
    app = _load(monkeypatch)

    (packages,) = app.recorded["pip_install"]
    assert packages == (f"vllm=={app.VLLM_VERSION}",)
    assert re.fullmatch(r"\d+\.\d+\.\d+", app.VLLM_VERSION)


def test_deploy_settings_come_from_the_environment(monkeypatch):
    app = _load(
        monkeypatch,
        KOVERAGE_MODAL_GPU="H100",
        KOVERAGE_MODAL_IDLE_TIMEOUT_S="900",
        KOVERAGE_MODAL_MAX_CONTAINERS="4",
        KOVERAGE_MODAL_FAST_BOOT="0",
        KOVERAGE_MODAL_APP_NAME="qwen-staging",
    )

    assert app.FUNCTION_OPTIONS["gpu"] == "H100"
    assert app.FUNCTION_OPTIONS["scaledown_window"] == 900
    assert app.FUNCTION_OPTIONS["max_containers"] == 4
    assert app.app.name == "qwen-staging"
    assert "--enforce-eager" not in app.vllm_command()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KOVERAGE_MODAL_GPU": "T4"}, "KOVERAGE_MODAL_GPU='T4' is not one of"),
        ({"KOVERAGE_MODAL_IDLE_TIMEOUT_S": "1"}, "outside \\[2, 3600\\]"),
        ({"KOVERAGE_MODAL_IDLE_TIMEOUT_S": "soon"}, "is not an integer"),
    ],
)
def test_bad_deploy_settings_fail_at_import(monkeypatch, env, message):
    with pytest.raises(ValueError, match=message):
        _load(monkeypatch, **env)
