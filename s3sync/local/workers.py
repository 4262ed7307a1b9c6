"""The worker tasks of `s3sync local`, launched as ECS launches them: host processes, or containers of the image.

What ECS takes from the task definition, the runner takes from the rendered ecs.yaml (resolved by s3sync.local.cfn):
the container's Environment, its Secrets (each `ValueFrom` read from Secrets Manager, JSON key and all, when the task
starts), EntryPoint and Command (appended to the image's ENTRYPOINT when only Command is given), User, StopTimeout
(SIGTERM, then SIGKILL that many seconds later) and the memory limit. `task_environment` adds what ECS itself sets
in every task (`ECS_SET`), and the runner adds the local stand-ins for what AWS provides by other means (`LOCAL_*`).
Nothing else: a variable of the runner's shell does not reach a worker (that is how a missing AWS_REGION hid).

- `HostWorker`: `python -m container.worker` on this machine (the default), with exactly that environment, plus
  PATH and the image's own ENV (`host_environment`).
- `ContainerWorker`: `docker run` of the worker image (`s3sync local --worker-image IMAGE`), `--network host` (the
  local servers listen on 127.0.0.1), the variables passed by name (`-e NAME`: their values never appear on a
  command line), labelled so that a run removes what it started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3sync.errors import UserError

log = logging.getLogger("s3sync.local")

ECS_DEFAULT_STOP_TIMEOUT = 30  # seconds: ECS's default when a container definition sets no StopTimeout
LABEL = "s3sync.local.run"  # on every container a run starts: its run id

#: What ECS sets in every task's containers (Amazon ECS developer guide, "Amazon ECS environment variables":
#: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-environment-variables.html), and what the local
#: run does about each. A task definition's own value of the same name wins, as in ECS.
ECS_SET = {
    "AWS_REGION": "set: the region the task runs in",
    "AWS_DEFAULT_REGION": "set: the same",
    "AWS_EXECUTION_ENV": "set: AWS_ECS_EC2 or AWS_ECS_FARGATE, the service's launch type",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "not set: the task role's keys are given as AWS_ACCESS_KEY_ID/... "
                                              "(LOCAL_STAND_INS); nothing serves ECS's credentials endpoint here",
    "ECS_CONTAINER_METADATA_URI": "not set: no task metadata endpoint here; the worker does not read it",
    "ECS_CONTAINER_METADATA_URI_V4": "not set: the same",
    "ECS_AGENT_URI": "not set: Fargate only (scale-in protection, fault injection endpoints); not used",
}

#: Set by the runner on every worker, in no task definition: the local stand-ins for what AWS provides otherwise.
LOCAL_STAND_INS = {
    "AWS_ENDPOINT_URL": "the control plane (moto) instead of the regional AWS endpoints",
    "AWS_ACCESS_KEY_ID": "the task role's credentials (ECS serves them at AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)",
    "AWS_SECRET_ACCESS_KEY": "the same",
    "S3SYNC_SOURCE_ENDPOINT_URL": "the server holding the source bucket (in AWS: S3 in the task's region)",
    "S3SYNC_SOURCE_ACCESS_KEY_ID": "its keys (in AWS: the task role)",
    "S3SYNC_SOURCE_SECRET_ACCESS_KEY": "the same",
    "S3SYNC_LOCAL_ROLE_POLICY": "host workers only: the task role's statements for s3sync.local.iam",
    "S3SYNC_LOCAL_PLAIN_HTTP": "the destination may be a local http:// server (in AWS: https:// only)",
}

#: Host processes only: what a process on this machine needs that the image provides by itself.
HOST_INHERITED = ("PATH",)  # from the runner's environment: the image has its own PATH (its ENV, or Docker's default)
HOST_ONLY = {
    # a container has no ~/.aws: neither shall the host process read this machine's (botocore would, via HOME or
    # the password database, and apply its region, retries or CA bundle)
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
#: The image's ENV that means nothing on the host (a path inside the image).
IMAGE_ONLY_ENV = ("PYTHONPATH",)


@dataclass(frozen=True)
class TaskLaunch:
    """The worker container of the task definition, as ECS starts it (resolved; secrets already read)."""

    environment: Mapping[str, str]  # Environment + Secrets + ECS_SET (not yet the local stand-ins)
    secret_names: tuple[str, ...]  # the names among them whose values came from Secrets Manager
    entry_point: tuple[str, ...] | None  # None: the image's ENTRYPOINT
    command: tuple[str, ...] | None  # None: the image's CMD
    user: str | None  # None: the image's USER
    stop_timeout: int
    memory_mib: int | None  # the container's Memory, else the task's; None when neither is a number


def task_definition(resolver: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task definition properties, its one container definition), resolved by an s3sync.local.cfn.Resolver."""
    defs = resolver.of_type("AWS::ECS::TaskDefinition")
    if len(defs) != 1:
        raise UserError(f"ecs.yaml has {len(defs)} task definitions; the local run expects one")
    props = resolver.resolve(resolver.resources[defs[0]]["Properties"])
    containers = props.get("ContainerDefinitions") or []
    if len(containers) != 1:
        raise UserError(f"the task definition has {len(containers)} containers; the local run expects one")
    return props, containers[0]


def parse_value_from(value_from: str) -> tuple[str, str, str, str]:
    """ECS's Secrets Manager reference `arn:...:secret:name[:json-key[:version-stage[:version-id]]]` ->
    (secret ARN, json key, version stage, version id); "" for what is not given."""
    fields = value_from.split(":")
    if len(fields) < 7 or fields[2] != "secretsmanager":
        raise UserError(f"secret reference {value_from!r}: only Secrets Manager ARNs are modelled locally")
    arn = ":".join(fields[:7])
    rest = (fields[7:] + ["", "", ""])[:3]
    return arn, rest[0], rest[1], rest[2]


def task_launch(resolver: Any, read_secret: Callable[[str, str, str], str], *, region: str,
                launch_type: str = "EC2") -> TaskLaunch:
    """What ECS gives the worker container. `read_secret(arn, version_stage, version_id)` -> SecretString."""
    import json

    props, container = task_definition(resolver)
    env: dict[str, str] = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE" if launch_type.upper() == "FARGATE" else "AWS_ECS_EC2",
    }
    env.update({str(e["Name"]): str(e.get("Value", "")) for e in container.get("Environment", [])})
    secret_names = []
    for s in container.get("Secrets", []):
        arn, key, stage, version = parse_value_from(str(s["ValueFrom"]))
        text = read_secret(arn, stage, version)
        if key:
            try:
                value = json.loads(text)[key]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"secret {arn}: no JSON key {key!r} (task definition secret {s['Name']})") from None
        else:
            value = text
        env[str(s["Name"])] = str(value)
        secret_names.append(str(s["Name"]))

    def words(name: str) -> tuple[str, ...] | None:
        value = container.get(name)
        return tuple(str(w) for w in value) if value else None

    memory = container.get("Memory") or props.get("Memory")
    try:
        memory_mib = int(str(memory)) if memory else None
    except ValueError:
        memory_mib = None
    return TaskLaunch(env, tuple(secret_names), words("EntryPoint"), words("Command"),
                      str(container["User"]) if container.get("User") else None,
                      int(container.get("StopTimeout") or ECS_DEFAULT_STOP_TIMEOUT), memory_mib)


def host_environment(worker_env: Mapping[str, str], image_env: Mapping[str, str],
                     inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """A host worker's environment: the image's ENV (less paths inside the image), PATH from the runner, the
    no-~/.aws stand-ins, then the task's environment (which wins)."""
    inherited = os.environ if inherited is None else inherited
    env = {k: v for k, v in image_env.items() if k not in IMAGE_ONLY_ENV}
    env.update({k: inherited[k] for k in HOST_INHERITED if k in inherited})
    env.update(HOST_ONLY)
    env.update(worker_env)
    return env


# --- worker handles -----------------------------------------------------------------------------------------------
class HostWorker:
    """`python -m container.worker` as a process of this machine."""

    kind = "process"

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self._p = subprocess.Popen([sys.executable, "-m", "container.worker"], env=dict(env), stdout=out,
                                       stderr=subprocess.STDOUT, cwd=str(cwd))

    @property
    def pid(self) -> int | None:
        return self._p.pid

    def poll(self) -> int | None:
        return self._p.poll()

    def terminate(self) -> None:
        if self._p.poll() is None:
            self._p.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._p.poll() is None:
            self._p.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self._p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float) -> None:
        """As ECS stops a task: SIGTERM, then SIGKILL after `timeout` seconds."""
        self.terminate()
        if self.wait(timeout) is None:
            self.kill()
            self.wait()


class ContainerWorker:
    """`docker run` of the worker image (attached: its output goes to the log; the client exits with it)."""

    kind = "container"

    def __init__(self, name: str, image: str, launch: TaskLaunch, env: Mapping[str, str], log_path: Path,
                 run_id: str) -> None:
        self.name = name
        self.log_path = log_path
        self._pid: int | None = None
        self._pid_checked = float("-inf")
        args = ["docker", "run", "--rm", "--name", name, "--network", "host", "--label", f"{LABEL}={run_id}",
                "--stop-timeout", str(launch.stop_timeout)]
        if launch.user:
            args += ["--user", launch.user]
        if launch.memory_mib:
            args += ["--memory", f"{launch.memory_mib}m"]
        for key in sorted(env):
            args += ["--env", key]  # by name: the value comes from the docker client's environment below
        tail: list[str] = []
        if launch.entry_point:
            args += ["--entrypoint", launch.entry_point[0]]
            tail += list(launch.entry_point[1:])
        tail += list(launch.command or ())
        client_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME") or k.startswith("DOCKER_")}
        with open(log_path, "ab") as out:
            self._p = subprocess.Popen([*args, image, *tail], env={**client_env, **env}, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int | None:
        """The host pid of the container's main process (the worker), once it runs."""
        now = time.monotonic()
        if self._pid is None and self._p.poll() is None and now - self._pid_checked >= 1.0:
            self._pid_checked = now
            done = _docker("inspect", "--format", "{{.State.Pid}}", self.name)
            if done.returncode == 0 and done.stdout.strip() not in ("", "0"):
                self._pid = int(done.stdout.strip())
        return self._pid

    def poll(self) -> int | None:
        return self._p.poll()

    def terminate(self) -> None:
        if self._p.poll() is None:
            _docker("kill", "--signal", "SIGTERM", self.name)

    def kill(self) -> None:
        if self._p.poll() is None:
            _docker("kill", self.name)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self._p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float) -> None:
        """`docker stop`: SIGTERM (the image's STOPSIGNAL), then SIGKILL after `timeout` seconds, as ECS does."""
        if self._p.poll() is None:
            _docker("stop", "--time", str(int(timeout)), self.name, timeout=timeout + 30)
        if self.wait(30) is None:  # the client may take a moment after the container
            self._p.kill()
            self._p.wait()


Worker = HostWorker | ContainerWorker


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["docker", *args], 1, "", str(exc))


def stop_all(workers: list[Worker], timeout: float) -> None:
    """Stop every worker at once (each SIGTERM, then SIGKILL after `timeout`), and wait for all."""
    threads = [threading.Thread(target=w.stop, args=(timeout,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 60)


def remove_containers(run_id: str) -> None:
    """Force-remove any container of this run still there (its `docker run` client died, say)."""
    done = _docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}={run_id}")
    ids = done.stdout.split()
    if ids:
        _docker("rm", "--force", *ids)


def check_image(image: str) -> None:
    """The worker image must be in the local engine (a run never pulls: no registry here)."""
    done = _docker("image", "inspect", "--format", "{{.Id}}", image)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["docker image inspect failed"])[-1]
        raise UserError(f"worker image {image}: {reason}; build it with `s3sync image build`")


__all__ = [
    "ECS_SET",
    "HOST_INHERITED",
    "LOCAL_STAND_INS",
    "ContainerWorker",
    "HostWorker",
    "TaskLaunch",
    "Worker",
    "check_image",
    "host_environment",
    "parse_value_from",
    "remove_containers",
    "stop_all",
    "task_definition",
    "task_launch",
]
