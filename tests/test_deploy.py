"""
The packaging and the deployment examples stay true to the command they run.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from batchrunner.config.parsing import parse_duration
from batchrunner.flags import build_parser
from batchrunner.prepare.shards import ShardPlan, shard_output

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """A container spec's environment as a mapping."""
    return {item["name"]: item["value"] for item in container["env"]}


def check_args(args: list[str], shards: int, timeout: float) -> None:
    """*args* parse, stop in time for *timeout*, and give each shard its own output."""
    parsed = build_parser().parse_args(args)
    assert parse_duration(parsed.deadline) < timeout
    names = {
        shard_output(parsed.output, parsed.input, ShardPlan(shards, i, "claim"), i)
        for i in range(shards)
    }
    assert len(names) == shards


def test_kubernetes_indexed_job() -> None:
    """The Indexed Job's shard count is its completions; it runs unprivileged."""
    job = yaml.safe_load((DEPLOY / "k8s-indexed-job.yaml").read_text())
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["completionMode"] == "Indexed"
    assert env_of(container)["BATCHRUNNER_SHARDS"] == str(spec["completions"])
    assert pod["securityContext"]["runAsUser"] == 10001
    check_args(container["args"], spec["completions"], spec["activeDeadlineSeconds"])


def test_container_apps_job() -> None:
    """Every replica claims one shard: parallelism, completions and shards agree."""
    job = yaml.safe_load((DEPLOY / "containerapps-job.yaml").read_text())
    configuration = job["properties"]["configuration"]
    trigger = configuration["scheduleTriggerConfig"]
    (container,) = job["properties"]["template"]["containers"]
    env = env_of(container)
    shards = int(env["BATCHRUNNER_SHARDS"])
    assert trigger["parallelism"] == trigger["replicaCompletionCount"] == shards
    assert job["identity"]["type"] == "UserAssigned" and env["AZURE_CLIENT_ID"]
    check_args(container["args"], shards, configuration["replicaTimeout"])


def test_crontab_line_runs_a_valid_command() -> None:
    """The crontab's command line is one batchrunner accepts."""
    (line,) = [
        text
        for text in (DEPLOY / "crontab").read_text().splitlines()
        if text and not text.startswith("#")
    ]
    words = shlex.split(line.split(">>")[0])
    args = words[words.index("batchrunner") + 1 :]
    assert parse_duration(build_parser().parse_args(args).deadline) < 4 * 3600


def test_dockerfile_runs_the_module_unprivileged() -> None:
    """A slim base, a non-root user, and python -m batchrunner as the entrypoint."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith(("#", " "))]
    assert instructions[0].startswith("FROM python:") and "slim" in instructions[0]
    (user,) = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert user not in ("root", "0")
    assert 'ENTRYPOINT ["python", "-m", "batchrunner"]' in instructions
