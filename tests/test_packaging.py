"""The Dockerfile and compose file cannot be run here (no Docker engine), so check what can be checked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_compose_has_the_documented_services_and_real_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "inbox", "worker", "scheduler", "postgres", "redis", "migrate"} <= set(services)
    assert services["inbox"]["command"] == ["cobrabot", "inbox-worker"]
    for name, service in services.items():
        command = service.get("command")
        if command and command[0] == "cobrabot":
            group_or_command = main.get_command(None, command[1])  # type: ignore[arg-type]
            assert group_or_command is not None, f"compose service {name} runs unknown command {command}"
            if len(command) > 2:
                assert group_or_command.get_command(None, command[2]) is not None  # type: ignore[union-attr]
    assert services["web"]["ports"] == ["8000:8000"]


def test_dockerfile_is_slim_non_root_and_runs_gunicorn_on_the_wsgi_app():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert '"gunicorn"' in dockerfile and '"bot.wsgi:app"' in dockerfile
    assert (ROOT / "bot" / "wsgi.py").read_text().count("create_app()") == 1
    for copied in re.findall(r"^COPY (\w+) \./\w+$", dockerfile, re.M):
        assert (ROOT / copied).is_dir(), f"Dockerfile copies missing directory {copied}"


def test_package_declares_the_cli_and_ships_data_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "cobrabot"
    assert project["project"]["scripts"]["cobrabot"] == "bot.cli:main"
    package_data = project["tool"]["setuptools"]["package-data"]
    assert "versions/*.py" in package_data["migrations"]
    assert "templates/*.yaml" in package_data["flows"]
