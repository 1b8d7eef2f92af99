"""The docker-compose stack: a valid file (checked without a daemon) and a config in step."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from corral.config import example_config_text, load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_CONFIG = ROOT / "docker" / "corral.compose.toml"


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (.ci/run installs it)")
def test_docker_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, check=False, timeout=60,
        env={"PATH": "/usr/bin:/bin", "CORRAL_GATEWAY_KEY": "sk-test",
             "FLOWER_BASIC_AUTH": "user:pass"})
    assert result.returncode == 0, result.stderr
    for service in ("postgres:", "redis:", "simulator:", "worker:", "flower:", "exporter:",
                    "prometheus:", "grafana:", "producer:"):
        assert service in result.stdout
    # Every corral process keeps its records in the compose PostgreSQL, not a SQLite file
    # inside its own container.
    assert result.stdout.count("CORRAL_STORE_URL: postgresql+psycopg://corral:") == 5
    assert "noeviction" in result.stdout and "appendonly" in result.stdout
    assert "stop_grace_period: 5m30s" in result.stdout or "330s" in result.stdout


def test_compose_config_is_the_example_config_pointed_at_the_simulator_service() -> None:
    compose = load_config(COMPOSE_CONFIG)
    assert compose.providers["gateway"].base_url == "http://simulator:8100/v1"
    body = COMPOSE_CONFIG.read_text().split("\n\n", 1)[1]
    example = example_config_text().split("\n\n", 1)[1]
    assert body == example.replace("http://127.0.0.1:8100/v1", "http://simulator:8100/v1")
