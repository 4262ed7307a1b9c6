"""The worker task as ECS launches it (s3sync.local.workers): the task definition's environment, secrets, entry
point, user and stop timeout, read from the rendered ecs.yaml; a host worker process gets exactly that environment
(plus PATH and the image's own ENV), nothing of the runner's shell. The container side is in tests/test_image.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from s3sync import contract
from s3sync.contract import Env
from s3sync.errors import UserError
from s3sync.local.iam import ROLE_POLICY_ENV
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.local.workers import HOST_INHERITED, HOST_ONLY, parse_value_from, task_definition
from s3sync.package.image_context import dockerfile_env
from s3sync.package.sources import source_root

pytestmark = pytest.mark.timeout(120)


def test_secret_references_are_read_as_ecs_reads_them() -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:s3sync-dest-credentials-AbCdEf"
    assert parse_value_from(arn) == (arn, "", "", "")
    assert parse_value_from(f"{arn}:accessKeyId::") == (arn, "accessKeyId", "", "")
    assert parse_value_from(f"{arn}:secretAccessKey:AWSPREVIOUS:") == (arn, "secretAccessKey", "AWSPREVIOUS", "")
    with pytest.raises(UserError, match="only Secrets Manager"):
        parse_value_from("arn:aws:ssm:us-east-1:123456789012:parameter/x")


@pytest.mark.system
def test_a_host_worker_gets_only_the_task_definitions_environment(moto_server: Any, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3SYNC_CANARY", "from-the-runner-shell")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nowhere/ca.pem")
    monkeypatch.setenv(Env.LOG_LEVEL, "DEBUG")  # not in the task definition: the worker logs at its default
    runner = LocalRunner(LocalOptions(endpoint_url=moto_server.endpoint_url, name="task-env", state_dir=tmp_path,
                                      source=BucketSpec("task-env-src"), dest=BucketSpec("task-env-dst"),
                                      min_tasks=1, max_tasks=1, timeout=60))
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("summary", runner.run()), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = tmp_path / "logs" / "worker-1.log"
            if log.exists() and "worker started" in log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        pid = json.loads((tmp_path / "workers.json").read_text())[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
    finally:
        runner.stop()
        t.join(60)
    env = dict(item.split("=", 1) for item in environ.split("\0") if item)
    image_env = dockerfile_env((source_root() / "container" / "Dockerfile").read_text())
    expected = {**{k: v for k, v in image_env.items() if k != "PYTHONPATH"}, **HOST_ONLY, **runner.worker_env}
    assert set(env) == set(expected) | set(HOST_INHERITED)
    assert {k: env[k] for k in expected} == expected
    assert "S3SYNC_CANARY" not in env and "AWS_CA_BUNDLE" not in env and Env.LOG_LEVEL not in env
    # what the task definition says, resolved against the local resources, and the secret's values
    task, container = task_definition(runner.stacks.ecs)
    assert {e["Name"] for e in container["Environment"]} <= set(env)
    assert env[Env.QUEUE_URL] == runner.resources.queue_url
    assert env[Env.TRANSFERS_TABLE] == runner.resources.transfers_table
    # the China keys are not in the environment (issue 18 item 2): the worker reads the secret by its ARN
    assert env[Env.DEST_SECRET_ARN] == runner.resources.secret_arn and "Secrets" not in container
    assert Env.DEST_ACCESS_KEY_ID not in env and Env.DEST_SECRET_ACCESS_KEY not in env
    assert env[Env.LOCAL_PLAIN_HTTP] == "1"  # a local stand-in: the local servers speak http://
    # what ECS sets (AWS_REGION, AWS_DEFAULT_REGION, AWS_EXECUTION_ENV), and the local stand-ins
    assert (env["AWS_REGION"], env["AWS_DEFAULT_REGION"], env["AWS_EXECUTION_ENV"]) == ("us-east-1", "us-east-1",
                                                                                       "AWS_ECS_EC2")
    assert env["AWS_ENDPOINT_URL"] == moto_server.endpoint_url and ROLE_POLICY_ENV in env
    # the launch settings the container runs with
    assert runner.task.stop_timeout == container.get("StopTimeout", 30)
    assert runner.task.command == (tuple(container["Command"]) if container.get("Command") else None)
    assert runner.task.entry_point is None and runner.task.user is None  # the image's: contract.WORKER_COMMAND
    assert runner.task.memory_mib == int(container.get("Memory") or task["Memory"])
    assert contract.WORKER_COMMAND == ("python", "-m", "container.worker")
