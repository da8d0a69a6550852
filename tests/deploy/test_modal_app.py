"""The Modal app module imports offline and describes the intended deployment."""

import importlib.util
import pathlib

import pytest

modal = pytest.importorskip("modal")

_MODULE_PATH = (
    pathlib.Path(__file__).resolve().parents[2] / "modal_app" / "qwen3_vllm.py"
)


def _load(monkeypatch, **env: str):
    """Executes the app module afresh under `env` (no network, no token)."""
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
    spec = importlib.util.spec_from_file_location("qwen3_vllm_under_test", _MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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


def test_vllm_command_serves_openai_api_behind_a_key(monkeypatch):
    app = _load(monkeypatch)

    command = app.vllm_command("s3cret")

    assert command[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    flags = {
        command[i]: command[i + 1]
        for i in range(3, len(command) - 1)
        if command[i].startswith("--")
    }
    assert flags["--api-key"] == "s3cret"
    assert flags["--port"] == str(app.VLLM_PORT) == "8000"
    assert flags["--host"] == "0.0.0.0"
    assert int(flags["--max-model-len"]) == 32768
    assert 0.5 < float(flags["--gpu-memory-utilization"]) <= 0.95
    assert "qwen3-8b" in command and "--enforce-eager" in command


def test_vllm_command_refuses_an_empty_key(monkeypatch):
    app = _load(monkeypatch)

    with pytest.raises(ValueError, match="KOVERAGE_MODAL_API_KEY is empty"):
        app.vllm_command("")


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
    assert "--enforce-eager" not in app.vllm_command("k")


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
