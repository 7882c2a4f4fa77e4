"""Structural checks for docker-compose.yaml and docker/Dockerfile.

No Docker engine is needed: the files are parsed with PyYAML and read as
text. This catches typos and drift (missing services, mounts, queue
wiring) without building or starting anything.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-worker-restores",
    "airflow-triggerer",
    "airflow-init",
}
REQUIRED_MOUNTS = ("dags", "plugins", "include")
REQUIRED_HOST_DIRS = ("dags", "plugins", "include", "config")
AIRFLOW_VERSION = "3.3.2"
EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"
EDGE_WORKERS = {"airflow-edge-worker-us-east-1": "worker-us-east-1", "airflow-edge-worker-us-west-2": "worker-us-west-2"}
EDGE_QUEUES = ["default", "recovery"]


def interpolate(value: object, env: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}`` / ``${NAME}`` interpolation, as ``docker compose`` resolves it from .env."""
    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        if env.get(name):
            return env[name]
        assert default is not None, f"${{{name}}} has no default and is not set"
        return default

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", one, str(value))


@pytest.fixture(scope="module")
def compose_text() -> str:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict), "docker-compose.yaml must be a YAML mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yaml has no 'services' mapping"
    return data


@pytest.fixture(scope="module")
def common(compose: dict) -> dict:
    block = compose.get("x-airflow-common")
    assert isinstance(block, dict), "docker-compose.yaml must define an 'x-airflow-common' block"
    return block


@pytest.fixture(scope="module")
def airflow_services(compose: dict, compose_text: str) -> dict[str, dict]:
    """Services that merge the x-airflow-common anchor (``<<: *airflow-common``).

    The anchor check runs on the YAML node graph, so a service that copies
    the settings by hand instead of merging the anchor is not counted.
    """
    root = yaml.compose(compose_text)
    top = {key.value: value for key, value in root.value}
    common_node = top["x-airflow-common"]
    names = []
    for svc_key, svc_node in top["services"].value:
        merges = [v for k, v in svc_node.value if k.value == "<<"]
        if any(m is common_node for m in merges):
            names.append(svc_key.value)
    assert names, "no service merges the x-airflow-common anchor (<<: *airflow-common)"
    return {name: compose["services"][name] for name in names}


def _command_args(service: dict) -> list[str]:
    command = service.get("command", [])
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def _mounts(service: dict) -> dict[str, str]:
    """Map container path -> host path for the service's short-syntax bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"expected short volume syntax, got {volume!r}"
        host, container = volume.split(":")[:2]
        mounts[container] = host
    return mounts


def test_required_services_present(compose: dict) -> None:
    missing = REQUIRED_SERVICES - set(compose["services"])
    assert not missing, f"docker-compose.yaml is missing services: {sorted(missing)}"


def test_flower_is_optional(compose: dict) -> None:
    flower = compose["services"].get("flower")
    assert flower is not None, "flower service is missing"
    assert "flower" in flower.get("profiles", []), "flower must only start under the 'flower' profile"


def test_all_airflow_components_use_common_anchor(airflow_services: dict) -> None:
    expected = {name for name in REQUIRED_SERVICES if name.startswith("airflow-")}
    missing = expected - set(airflow_services)
    assert not missing, f"these services do not merge <<: *airflow-common: {sorted(missing)}"


def test_common_environment(common: dict) -> None:
    env = common.get("environment", {})
    assert interpolate(env.get("AIRFLOW__CORE__EXECUTOR"), {}) == "CeleryExecutor", "Celery must stay the default"
    expected = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:airflow@postgres/airflow",
        "AIRFLOW__CELERY__BROKER_URL": "redis://:@redis:6379/0",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
        "REHEARSAL_TARGETS_FILE": "/opt/airflow/config/targets.yaml",
    }
    for key, value in expected.items():
        assert str(env.get(key)) == value, f"x-airflow-common {key} is {env.get(key)!r}, expected {value!r}"
    assert str(env.get("AIRFLOW__CELERY__RESULT_BACKEND", "")).startswith("db+postgresql://"), (
        "AIRFLOW__CELERY__RESULT_BACKEND must point at the postgres service (db+postgresql://...)"
    )
    assert "/opt/airflow/include" in str(env.get("PYTHONPATH", "")).split(":"), (
        "PYTHONPATH must contain /opt/airflow/include so `import rehearsal` works"
    )


@pytest.mark.parametrize("env,executor", [({}, "CeleryExecutor"), ({"AIRFLOW_EXECUTOR": EDGE_EXECUTOR}, EDGE_EXECUTOR)],
                         ids=["celery-layout", "edge-layout"])
def test_every_airflow_service_runs_the_one_executor_of_its_layout(airflow_services: dict, env: dict, executor: str) -> None:
    for name, service in airflow_services.items():
        value = interpolate(service.get("environment", {}).get("AIRFLOW__CORE__EXECUTOR"), env)
        assert value == executor, f"{name} runs with executor {value!r}, expected {executor}"


def test_service_environment_overrides_keep_common_env(common: dict, airflow_services: dict) -> None:
    """A service that sets its own environment must still merge the common env."""
    common_env = common["environment"]
    for name, service in airflow_services.items():
        env = service.get("environment", {})
        lost = {k for k in common_env if k not in env}
        assert not lost, f"{name} overrides environment without <<: *airflow-common-env, missing {sorted(lost)}"


def test_no_connection_credentials_in_compose(compose: dict) -> None:
    blocks = [("x-airflow-common", compose["x-airflow-common"])] + list(compose["services"].items())
    for name, block in blocks:
        conns = [k for k in block.get("environment", {}) if str(k).startswith("AIRFLOW_CONN_")]
        assert not conns, f"{name} hard-codes connections {conns}; use env vars or a secrets backend"


def test_every_airflow_service_mounts_code(airflow_services: dict) -> None:
    for name, service in airflow_services.items():
        mounts = _mounts(service)
        for directory in REQUIRED_MOUNTS:
            target = f"/opt/airflow/{directory}"
            assert target in mounts, f"{name} does not mount ./{directory} at {target}"
            assert mounts[target].rstrip("/").endswith(directory), (
                f"{name} mounts {mounts[target]!r} at {target}, expected ./{directory}"
            )


def test_mounted_host_dirs_exist(common: dict) -> None:
    mounts = _mounts(common)
    for directory in REQUIRED_HOST_DIRS:
        target = f"/opt/airflow/{directory}"
        assert target in mounts, f"x-airflow-common does not mount ./{directory} at {target}"
        host_path = (REPO_ROOT / mounts[target]).resolve()
        assert host_path == (REPO_ROOT / directory).resolve(), (
            f"{target} is mounted from {mounts[target]!r}, expected ./{directory}"
        )
        assert host_path.is_dir(), f"mounted host directory {host_path} does not exist in the repo"


def test_image_is_built_from_project_dockerfile(common: dict, airflow_services: dict) -> None:
    build = common.get("build")
    assert isinstance(build, dict), "x-airflow-common must build the image (build: {context, dockerfile})"
    assert build.get("context") == ".", f"build context is {build.get('context')!r}, expected '.'"
    assert build.get("dockerfile") == "docker/Dockerfile", (
        f"build.dockerfile is {build.get('dockerfile')!r}, expected 'docker/Dockerfile'"
    )
    assert common.get("image") == f"rehearsal-airflow:{AIRFLOW_VERSION}", (
        f"image is {common.get('image')!r}, expected rehearsal-airflow:{AIRFLOW_VERSION}"
    )
    for name, service in airflow_services.items():
        assert service.get("build") == build, f"{name} does not build from the common build block"


def test_dockerfile_extends_official_image_and_installs_requirements() -> None:
    dockerfile = REPO_ROOT / "docker" / "Dockerfile"
    assert dockerfile.is_file(), f"{dockerfile} is missing"
    # Join continuation lines and drop comments/blank lines to get instructions.
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert instructions, "docker/Dockerfile has no instructions"
    assert instructions[0].split() == ["FROM", f"apache/airflow:{AIRFLOW_VERSION}-python3.11"], (
        f"docker/Dockerfile must start with FROM apache/airflow:{AIRFLOW_VERSION}-python3.11 (the lock is for 3.11), got {instructions[0]!r}"
    )
    assert any(i.startswith("COPY") and "requirements.txt" in i for i in instructions), (
        "docker/Dockerfile must COPY requirements.txt"
    )
    assert any(i.startswith("RUN") and "pip install" in i and "requirements.txt" in i for i in instructions), (
        "docker/Dockerfile must pip install -r requirements.txt"
    )
    users = [i.split()[1] for i in instructions if i.startswith("USER")]
    assert users and users[-1] == "airflow", "docker/Dockerfile must switch back to USER airflow"


def test_apiserver_publishes_8080(compose: dict) -> None:
    api = compose["services"]["airflow-apiserver"]
    assert _command_args(api) == ["api-server"], f"airflow-apiserver command is {api.get('command')!r}"
    container_ports = [str(port).split(":")[-1] for port in api.get("ports", [])]
    assert "8080" in container_ports, f"airflow-apiserver must publish port 8080, has {api.get('ports')!r}"


def test_default_worker_runs_celery(compose: dict) -> None:
    worker = compose["services"]["airflow-worker"]
    assert _command_args(worker)[:2] == ["celery", "worker"], (
        f"airflow-worker command is {worker.get('command')!r}, expected 'celery worker'"
    )


def test_a_worker_consumes_restores_queue(airflow_services: dict) -> None:
    consumers = {}
    for name, service in airflow_services.items():
        args = _command_args(service)
        if args[:2] != ["celery", "worker"]:
            continue
        for flag in ("-q", "--queues"):
            if flag in args and args.index(flag) + 1 < len(args):
                queues = args[args.index(flag) + 1].split(",")
                if "restores" in queues:
                    consumers[name] = service
    assert consumers, "no celery worker consumes the 'restores' queue (celery worker -q restores)"
    for name, service in consumers.items():
        concurrency = service.get("environment", {}).get("AIRFLOW__CELERY__WORKER_CONCURRENCY")
        assert str(concurrency) == "1", f"{name} must run restores one at a time (concurrency {concurrency!r})"


def test_the_edge_workers_start_only_in_the_edge_layout(compose: dict, airflow_services: dict) -> None:
    edge = {name for name, service in compose["services"].items() if "edge" in service.get("profiles", [])}
    assert edge == set(EDGE_WORKERS), f"services under the 'edge' profile: {sorted(edge)}"
    assert set(EDGE_WORKERS) <= set(airflow_services), "an edge worker does not merge <<: *airflow-common"


@pytest.mark.parametrize("name", sorted(EDGE_WORKERS))
def test_one_edge_worker_per_region_serves_the_runbook_queues_under_its_own_name(compose: dict, name: str) -> None:
    worker = compose["services"][name]
    args = _command_args(worker)
    assert args[:2] == ["edge", "worker"], f"{name} command is {worker.get('command')!r}, expected 'edge worker ...'"
    flags = dict(zip(args[2::2], args[3::2], strict=True))
    assert flags.get("--queues", "").split(",") == EDGE_QUEUES, f"{name} serves {flags.get('--queues')!r}"
    assert flags.get("--edge-hostname") == worker.get("hostname") == EDGE_WORKERS[name], (
        f"{name}: --edge-hostname {flags.get('--edge-hostname')!r}, hostname {worker.get('hostname')!r}, "
        f"expected {EDGE_WORKERS[name]}")
    assert worker["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", (
        f"{name} must wait for the api-server it fetches its tasks from")
    assert "edge" in " ".join(map(str, worker["healthcheck"]["test"])), f"{name} healthcheck does not ask the worker"


def test_the_api_server_serves_the_edge_worker_api_where_the_workers_look(common: dict, compose: dict) -> None:
    env = common["environment"]
    assert str(env.get("AIRFLOW__EDGE__API_ENABLED")).lower() == "true", "the api-server must serve /edge_worker/v1"
    api_url = urlsplit(str(env.get("AIRFLOW__EDGE__API_URL")))
    execution = urlsplit(str(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]))
    assert api_url.path == "/edge_worker/v1/rpcapi", f"AIRFLOW__EDGE__API_URL path is {api_url.path!r}"
    assert (api_url.scheme, api_url.netloc) == (execution.scheme, execution.netloc) == ("http", "airflow-apiserver:8080")
    assert "airflow-apiserver" in compose["services"]
