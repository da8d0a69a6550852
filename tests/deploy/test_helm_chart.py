"""The Helm chart renders, lints, validates and keeps its promises offline."""

import copy
import json
import re

import pytest
import yaml

from tests.deploy.conftest import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    SCENARIO_FILES,
    load_values,
    manifests,
    render,
)

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

_SERVICES = ("router", "chat", "ingest", "worker", "underwriter")
_KUBE_VERSIONS = ("1.27", "1.33")
_DEFAULT_VALUES = CHART_DIR / "ci" / "default-values.yaml"


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def _koverage_deployments(objects: list[dict]) -> dict[str, dict]:
    return {
        _component(d): d
        for d in _by_kind(objects, "Deployment").values()
        if _component(d) in _SERVICES
    }


def _collector(objects: list[dict]) -> dict:
    (collector,) = [
        d
        for d in _by_kind(objects, "Deployment").values()
        if _component(d) == "collector"
    ]
    return collector


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _all_pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((obj["metadata"]["name"], obj["spec"]))
    return specs


def test_scenario_files_exist():
    assert {p.stem for p in SCENARIO_FILES} >= {
        "default-values",
        "full-values",
        "kafka-path-values",
    }


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_chart_lints_clean_in_strict_mode(path):
    report = helm.lint(CHART_DIR, load_values(path), strict=True, namespace=NAMESPACE)

    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_scenario_values_pass_the_values_schema(path):
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(load_values(path))


def test_values_schema_rejects_unknown_export_path():
    values = load_values(_DEFAULT_VALUES)
    values["collector"] = {"exportPath": "carrier-pigeon"}

    with pytest.raises(helm.HelmValuesError, match="exportPath"):
        render(values)


def test_values_schema_rejects_misspelled_key():
    values = load_values(_DEFAULT_VALUES)
    values["kafka"]["bootstraps"] = "typo:9092"

    with pytest.raises(helm.HelmValuesError, match="bootstraps"):
        render(values)


@pytest.mark.parametrize("kube_version", _KUBE_VERSIONS)
def test_every_manifest_validates_against_kubernetes_schemas(scenario, kube_version):
    _, _, objects = scenario
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            failures.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}"
            )
    assert failures == []


def test_kubernetes_validation_catches_a_broken_manifest():
    # Proves the previous check can fail: strict mode refuses unknown fields.
    values = load_values(_DEFAULT_VALUES)
    deployment = next(iter(_koverage_deployments(manifests(render(values))).values()))
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33", strict=True)


def test_chart_installs_every_service_and_the_collector(scenario):
    _, _, objects = scenario
    deployments = _by_kind(objects, "Deployment")
    services = _by_kind(objects, "Service")

    components = {_component(d) for d in deployments.values()}
    assert components == {*_SERVICES, "collector"}
    assert {_component(s) for s in services.values()} == components
    for deployment in _koverage_deployments(objects).values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [
            "python",
            "-m",
            f"services.{_component(deployment)}",
        ]


def test_each_service_binds_its_own_address_and_dials_the_others(scenario):
    _, _, objects = scenario
    config = next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")
    )

    for component, deployment in _koverage_deployments(objects).items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert (
            _env(container)[f"KOVERAGE_{component.upper()}_ADDRESS"]["value"]
            == "0.0.0.0:50051"
        )
        assert container["envFrom"] == [
            {"configMapRef": {"name": config["metadata"]["name"]}}
        ]

    services = {_component(s): s for s in _by_kind(objects, "Service").values()}
    for component in _SERVICES:
        host, _, port = config["data"][
            f"KOVERAGE_{component.upper()}_ADDRESS"
        ].rpartition(":")
        assert host == services[component]["metadata"]["name"] and port == "50051"
    otlp = config["data"]["KOVERAGE_OTLP_ENDPOINT"]
    assert otlp == f"http://{services['collector']['metadata']['name']}:4317"
    assert config["data"]["KOVERAGE_HOST"] == "0.0.0.0"
    assert config["data"]["KOVERAGE_METRICS_PORT"] == "9090"


def test_grpc_probes_use_the_standard_health_service(scenario):
    _, _, objects = scenario
    for deployment in _koverage_deployments(objects).values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            # No `service` field: the server's overall status, which
            # MeshServer flips to NOT_SERVING while draining.
            assert container[probe]["grpc"] == {"port": 50051}, probe
    collector = _collector(objects)
    probe = collector["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["port"] == "health"


def test_every_pod_runs_with_secure_defaults(scenario):
    _, _, objects = scenario
    for name, spec in _all_pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        mounts_tmp = False
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["privileged"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            assert container.get("resources", {}).get("limits", {}).get("memory"), name
            mounts_tmp |= any(
                m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])
            )
        if not name.endswith("-test"):
            assert mounts_tmp, f"{name} has a read-only root but no writable /tmp"


def test_secrets_come_only_from_the_existing_secret(scenario):
    values, _, objects = scenario
    secret_name = values["secrets"]["existingSecret"]
    keys = {"databaseUrl": "database-url", **values["secrets"].get("keys", {})}

    assert not [o for o in objects if o["kind"] == "Secret"]
    for name, spec in _all_pod_specs(objects):
        for container in spec["containers"]:
            for var in container.get("env", []):
                assert "value" not in var or not re.search(
                    r"(?i)(password|://[^/]*@)", var["value"]
                ), name
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret_name, (name, var["name"])

    deployments = _koverage_deployments(objects)
    for component, deployment in deployments.items():
        env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
        has_db = "KOVERAGE_DATABASE_URL" in env
        # Least privilege: only the table owners see the database URL, only
        # the router sees provider keys.
        assert has_db == (component in {"chat", "worker", "underwriter"}), component
        if has_db:
            assert (
                env["KOVERAGE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]
                == keys["databaseUrl"]
            )
        has_provider_keys = "KOVERAGE_OPENROUTER_API_KEY" in env
        assert has_provider_keys == (component == "router"), component
        api_keys = env["KOVERAGE_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert api_keys.get("optional", False) is not values.get("auth", {}).get(
            "required", True
        )


def test_ingest_trusts_only_the_collectors_own_tenant_as_a_relay(scenario):
    values, _, objects = scenario
    keys = values["secrets"].get("keys", {})
    tenant = values.get("auth", {}).get("collectorTenant", "")
    collector = _collector(objects)["spec"]["template"]["spec"]["containers"][0]
    ingest = _koverage_deployments(objects)["ingest"]
    ingest_env = _env(ingest["spec"]["template"]["spec"]["containers"][0])

    ref = _env(collector)["KOVERAGE_COLLECTOR_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == (
        keys.get("collectorApiKey") or keys.get("clientApiKey", "client-api-key")
    )
    if tenant:
        # A relay tenant only with a key the services do not hold.
        assert ref["key"] != keys.get("clientApiKey", "client-api-key")
        assert ingest_env["KOVERAGE_INGEST_TRUSTED_TENANTS"]["value"] == tenant
    else:
        assert "KOVERAGE_INGEST_TRUSTED_TENANTS" not in ingest_env
    for component, deployment in _koverage_deployments(objects).items():
        env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
        assert ("KOVERAGE_INGEST_TRUSTED_TENANTS" in env) == (
            bool(tenant) and component == "ingest"
        ), component


def test_only_the_router_trusts_the_services_tenant_as_a_relay(scenario):
    values, _, objects = scenario
    tenant = values.get("auth", {}).get("serviceTenant", "")
    for component, deployment in _koverage_deployments(objects).items():
        env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
        if tenant and component == "router":
            assert env["KOVERAGE_RELAY_TENANTS"]["value"] == tenant
        else:
            assert "KOVERAGE_RELAY_TENANTS" not in env, component


def test_only_the_worker_is_told_how_many_decode_processes_to_run(scenario):
    values, _, objects = scenario
    expected = str(values.get("worker", {}).get("decodeProcesses", 2))
    for component, deployment in _koverage_deployments(objects).items():
        env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
        if component == "worker":
            assert env["KOVERAGE_WORKER_DECODE_PROCESSES"]["value"] == expected
        else:
            assert "KOVERAGE_WORKER_DECODE_PROCESSES" not in env, component


def test_values_schema_refuses_a_negative_decode_process_count():
    values = load_values(_DEFAULT_VALUES)
    values.setdefault("worker", {})["decodeProcesses"] = -1

    with pytest.raises(helm.HelmValuesError, match="decodeProcesses"):
        render(values)


def test_selectors_match_only_their_own_pods(scenario):
    _, _, objects = scenario
    pod_templates = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] == "Deployment"
    }
    test_pods = {
        o["metadata"]["name"]: o["metadata"]["labels"]
        for o in objects
        if o["kind"] == "Pod"
    }

    def matches(selector: dict, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    selectors = [
        (s["metadata"]["name"], s["spec"]["selector"])
        for s in _by_kind(objects, "Service").values()
    ]
    selectors += [
        (d["metadata"]["name"], d["spec"]["selector"]["matchLabels"])
        for d in _by_kind(objects, "Deployment").values()
    ]
    selectors += [
        (p["metadata"]["name"], p["spec"]["selector"]["matchLabels"])
        for p in _by_kind(objects, "PodDisruptionBudget").values()
    ]
    for owner, selector in selectors:
        assert not {"helm.sh/chart", "app.kubernetes.io/version"} & selector.keys(), (
            owner
        )
        matched = [
            n
            for n, labels in {**pod_templates, **test_pods}.items()
            if matches(selector, labels)
        ]
        assert matched == [owner], (owner, matched)


def test_checksum_annotation_rolls_pods_when_config_changes():
    values = load_values(_DEFAULT_VALUES)
    changed = copy.deepcopy(values)
    changed["config"] = {"logLevel": "DEBUG"}

    def checksums(v: dict) -> dict[str, str]:
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
            for d in _koverage_deployments(manifests(render(v))).values()
        }

    before, after = checksums(values), checksums(values)
    assert before == after
    rolled = checksums(changed)
    assert all(rolled[name] != before[name] for name in before)


def test_collector_restarts_when_its_exporters_change():
    values = load_values(_DEFAULT_VALUES)
    with_tracing = {
        **values,
        "tracing": {"otlpEndpoint": "tempo.observability.svc:4317"},
    }

    def annotations(v: dict) -> dict:
        return _collector(manifests(render(v)))["spec"]["template"]["metadata"][
            "annotations"
        ]

    assert annotations(values) != annotations(with_tracing)


def test_autoscalers_own_replicas_of_router_and_worker(scenario):
    values, _, objects = scenario
    hpas = {
        _component(h): h for h in _by_kind(objects, "HorizontalPodAutoscaler").values()
    }
    deployments = _koverage_deployments(objects)

    for component in ("router", "worker"):
        enabled = values.get(component, {}).get("autoscaling", {}).get("enabled", True)
        assert (component in hpas) == enabled
        # With an HPA the Deployment leaves replicas alone, or every upgrade
        # would reset the HPA's choice.
        assert ("replicas" in deployments[component]["spec"]) != enabled
        if enabled:
            target = hpas[component]["spec"]["scaleTargetRef"]
            assert target == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployments[component]["metadata"]["name"],
            }
    assert set(hpas) <= {"router", "worker"}


def test_chat_runs_one_pod_replaced_by_recreate_without_autoscaler(scenario):
    _, _, objects = scenario
    deployments = _koverage_deployments(objects)
    hpas = {
        _component(h) for h in _by_kind(objects, "HorizontalPodAutoscaler").values()
    }

    chat = deployments["chat"]["spec"]
    # On start chat fails every streaming message in its database, so an old
    # and a new pod must never run at once.
    assert chat["replicas"] == 1
    assert chat["strategy"] == {"type": "Recreate"}
    assert "chat" not in hpas
    for component, deployment in deployments.items():
        if component != "chat":
            assert "strategy" not in deployment["spec"], component


def test_chat_budget_never_blocks_a_drain(scenario):
    values, _, objects = scenario
    if not values.get("podDisruptionBudget", {}).get("enabled", True):
        return
    budgets = {
        _component(p): p for p in _by_kind(objects, "PodDisruptionBudget").values()
    }

    assert budgets["chat"]["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budgets["chat"]["spec"]


def test_values_schema_refuses_chat_autoscaling():
    values = load_values(_DEFAULT_VALUES)
    values["chat"] = {"autoscaling": {"enabled": True}}

    with pytest.raises(helm.HelmValuesError, match="autoscaling"):
        render(values)


def test_network_policy_admits_only_the_mesh(scenario):
    values, _, objects = scenario
    policies = list(_by_kind(objects, "NetworkPolicy").values())
    if not values.get("networkPolicy", {}).get("enabled", True):
        assert policies == []
        return

    (policy,) = policies
    mesh = {"app.kubernetes.io/name": "koverage", "app.kubernetes.io/instance": RELEASE}
    assert policy["spec"]["podSelector"] == {"matchLabels": mesh}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    first, *extra = policy["spec"]["ingress"]
    assert first == {"from": [{"podSelector": {"matchLabels": mesh}}]}
    assert extra == values.get("networkPolicy", {}).get("extraIngress", [])
    for obj in objects:
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert mesh.items() <= labels.items(), obj["metadata"]["name"]


def test_pod_disruption_budgets_cover_every_deployment(scenario):
    values, _, objects = scenario
    budgets = {
        _component(p): p for p in _by_kind(objects, "PodDisruptionBudget").values()
    }
    if not values.get("podDisruptionBudget", {}).get("enabled", True):
        assert budgets == {}
        return
    assert set(budgets) == {
        _component(d) for d in _by_kind(objects, "Deployment").values()
    }
    for budget in budgets.values():
        assert len({"minAvailable", "maxUnavailable"} & budget["spec"].keys()) == 1


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(scenario):
    values, _, objects = scenario
    jobs = list(_by_kind(objects, "Job").values())
    if not values.get("migrations", {}).get("enabled", True):
        assert jobs == []
        return

    (job,) = jobs
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["koverage", "migrate"]
    assert spec["restartPolicy"] == "Never"
    # A pre-install hook runs before the release's own objects exist: it may
    # use only the pre-existing Secret, never the chart's ConfigMap or
    # ServiceAccount.
    assert "envFrom" not in container and "serviceAccountName" not in spec
    ref = _env(container)["KOVERAGE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == values["secrets"]["existingSecret"]


def test_helm_test_pod_checks_every_service():
    values = load_values(_DEFAULT_VALUES)
    objects = manifests(render(values))
    (pod,) = _by_kind(objects, "Pod").values()

    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    targets = command[4:]
    services = {
        _component(s): s["metadata"]["name"]
        for s in _by_kind(objects, "Service").values()
    }
    assert targets == [f"grpc:{services[c]}:50051" for c in _SERVICES] + [
        f"http://{services['collector']}:13133/"
    ]


def test_notes_tell_how_to_reach_chat_with_grpcurl(scenario):
    values, rendered, objects = scenario
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    chat = next(
        s["metadata"]["name"]
        for s in _by_kind(objects, "Service").values()
        if _component(s) == "chat"
    )

    assert f"port-forward svc/{chat} 50051:50051" in notes
    assert "koverage.chat.v1.ChatService/StreamChat" in notes
    json.loads(re.search(r"-d '(\{.*\})'", notes).group(1))
    assert ("authorization: Bearer" in notes) == values.get("auth", {}).get(
        "required", True
    )


def test_collector_mounts_the_production_configuration_unchanged(scenario):
    values, _, objects = scenario
    config_map = next(
        o for o in objects if o["kind"] == "ConfigMap" and _component(o) == "collector"
    )
    production = (REPO_ROOT / "collector" / "otelcol-production.yaml").read_text()
    assert config_map["data"]["otelcol.yaml"].strip() == production.strip()

    collector = _collector(objects)
    container = collector["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    # Every ${env:NAME} the file reads is set on the container.
    wanted = set(re.findall(r"\$\{env:([A-Z0-9_]+)\}", production))
    assert wanted and wanted <= env.keys()

    override = next(a for a in container["args"] if a.startswith("--config=yaml:"))
    exporters = yaml.safe_load(override.removeprefix("--config=yaml:"))[
        "service::pipelines::traces::exporters"
    ]
    path = values.get("collector", {}).get("exportPath", "ingest")
    expected = ["kafka"] if path == "kafka" else ["otlp/ingest"]
    if values.get("tracing", {}).get("otlpEndpoint"):
        expected.append("otlp/tracing")
        assert (
            env["KOVERAGE_TRACING_OTLP_ENDPOINT"]["value"]
            == values["tracing"]["otlpEndpoint"]
        )
    assert exporters == expected
    defined = yaml.safe_load(production)["exporters"]
    assert set(exporters) <= defined.keys()


def test_dashboard_ships_only_when_enabled(scenario):
    values, _, objects = scenario
    dashboards = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ]
    enabled = values.get("grafanaDashboard", {}).get("enabled", False)
    assert len(dashboards) == (1 if enabled else 0)
    if enabled:
        (dashboard,) = dashboards
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        (body,) = dashboard["data"].values()
        titles = {p["title"] for p in json.loads(body)["panels"]}
        assert {
            "Latency percentiles",
            "Time to first token",
            "Throughput",
            "Error rate",
            "Cost by model",
        } <= titles


def test_every_values_key_is_commented():
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)[A-Za-z]\w*:(.*)$", line)
        if not match:
            continue
        if lines[index - 1].strip().startswith("#"):
            continue
        # A leaf of a compact object (requests, limits, seccomp type) is
        # documented by the comment on its parent key.
        indent, rest = len(match.group(1)), match.group(2).strip()
        parent = (
            next(
                j
                for j in range(index - 1, -1, -1)
                if lines[j].strip()
                and not lines[j].strip().startswith("#")
                and len(lines[j]) - len(lines[j].lstrip()) < indent
            )
            if indent
            else None
        )
        if rest and parent is not None and lines[parent - 1].strip().startswith("#"):
            continue
        undocumented.append(line.strip())
    assert undocumented == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "fixture",
            "worker.autoscaling.maxReplicas \\(10\\) exceeds kafka.spansTopicPartitions \\(4\\)",
        ),
        ({"secrets": {"existingSecret": ""}}, "secrets.existingSecret is required"),
        ({"kafka": {"bootstrap": ""}}, "kafka.bootstrap is required"),
        (
            {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
            "either minAvailable or maxUnavailable",
        ),
        (
            {"collector": {"memoryLimitMiB": 600}},
            "collector.memoryLimitMiB \\(600\\) must be below",
        ),
        (
            {"router": {"autoscaling": {"minReplicas": 9, "maxReplicas": 3}}},
            "minReplicas \\(9\\) is greater than maxReplicas \\(3\\)",
        ),
        (
            {"auth": {"collectorTenant": "koverage-collector"}},
            (
                "auth.collectorTenant is set but secrets.keys.collectorApiKey is "
                "empty: the collector would present the services' client key"
            ),
        ),
        (
            {"chat": {"replicas": 2}},
            (
                "chat.replicas is 2 but chat must run as one pod: on start it marks "
                "every streaming message in the database failed"
            ),
        ),
    ],
    ids=[
        "worker-over-partitions",
        "no-secret",
        "no-kafka",
        "pdb-both",
        "collector-memory",
        "hpa-min-max",
        "relay-tenant-without-own-key",
        "chat-replicas",
    ],
)
def test_contradictory_values_fail_with_a_clear_message(change, message):
    if change == "fixture":
        values = load_values(
            REPO_ROOT / "tests" / "deploy" / "fixtures" / "contradictory-values.yaml"
        )
    else:
        values = _merge(load_values(_DEFAULT_VALUES), change)

    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def _merge(base: dict, change: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
