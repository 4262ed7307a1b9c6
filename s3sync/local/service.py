"""The ECS service of `s3sync local`: as many worker processes (or containers of the worker image) as the service's
desired count says, restarted when one dies, stopped as ECS stops a task on scale-in. A mixin of LocalRunner
(s3sync.local.runner)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from s3sync.local.iam import ROLE_POLICY_ENV
from s3sync.local.options import project_root
from s3sync.local.workers import (
    ContainerWorker,
    HostWorker,
    Worker,
    host_environment,
    remove_containers,
    stop_all,
)

if TYPE_CHECKING:
    from pathlib import Path

    from s3sync.aws import Clients
    from s3sync.local.options import LocalOptions, Resources
    from s3sync.local.workers import TaskLaunch

log = logging.getLogger("s3sync.local")


class EcsService:
    """The worker tasks of the service, reconciled with its desired count."""

    if TYPE_CHECKING:  # LocalRunner's state and methods, which the service uses (for mypy; nothing at run time)
        options: LocalOptions
        resources: Resources
        task: TaskLaunch
        run_id: str
        state_dir: Path
        worker_env: dict[str, str]
        desired_counts: list[int]
        max_workers_seen: int
        _workers: list[Worker]
        _worker_seq: int
        _scaled: threading.Event
        _desired: int | None
        _desired_at: float
        _pids_written: list[int] | None

        @property
        def client(self) -> Clients: ...

    def desired_count(self) -> int:
        svc = self.client("ecs").describe_services(cluster=self.resources.cluster,
                                                   services=[self.resources.service])["services"][0]
        return int(svc["desiredCount"])

    def _reconcile_workers(self) -> None:
        """Keep as many live worker processes as the service's desired count (ECS restarts dead tasks too).

        The count is read after every scaling invocation and otherwise once a second (someone else may change
        it); dead processes are noticed at every call."""
        now = time.monotonic()
        if self._scaled.is_set() or now - self._desired_at >= 1.0 or self._desired is None:
            self._scaled.clear()
            self._desired, self._desired_at = self.desired_count(), now
        desired = self._desired
        if not self.desired_counts or self.desired_counts[-1] != desired:
            self.desired_counts.append(desired)
        for w in [w for w in self._workers if w.poll() is not None]:
            log.info("worker exited", extra={"worker": w.name, "pid": w.pid, "code": w.poll()})
            self._workers.remove(w)
        while len(self._workers) < desired:
            self._start_worker()
        while len(self._workers) > desired:
            w = self._workers.pop()
            # as ECS stops a task: SIGTERM (it releases its in-flight parts and exits), SIGKILL after StopTimeout
            threading.Thread(target=w.stop, args=(self.task.stop_timeout,), daemon=True).start()
        self.max_workers_seen = max(self.max_workers_seen, len(self._workers))
        pids = [pid for pid in (w.pid for w in self._workers) if pid is not None]
        if pids != self._pids_written:
            (self.state_dir / "workers.json").write_text(json.dumps(pids))
            self._pids_written = pids

    @property
    def workers(self) -> list[Worker]:
        """The live workers (host processes or containers), oldest first."""
        return list(self._workers)

    def _start_worker(self) -> None:
        self._worker_seq += 1
        log_path = self.state_dir / "logs" / f"worker-{self._worker_seq}.log"
        if self.options.worker_image:
            env = {k: v for k, v in self.worker_env.items() if k != ROLE_POLICY_ENV}
            name = f"s3sync-worker-{self.run_id}-{self._worker_seq}"
            w: Worker = ContainerWorker(name, self.options.worker_image, self.task, env, log_path, self.run_id)
        else:
            w = HostWorker(f"worker-{self._worker_seq}", host_environment(self.worker_env, _image_env()), log_path,
                           project_root())
        log.info("worker started", extra={"worker": w.name, "kind": w.kind, "log": str(log_path)})
        self._workers.append(w)

    def _stop_workers(self) -> None:
        stop_all(self._workers, getattr(self, "task", None) and self.task.stop_timeout or 30)
        self._workers.clear()
        if self.options.worker_image:
            remove_containers(self.run_id)

    # --- idleness -------------------------------------------------------------------------------------------------


def _image_env() -> dict[str, str]:
    """The worker image's own ENV (its Dockerfile's), which a host worker gets too; {} outside a checkout."""
    try:
        text = (project_root() / "container" / "Dockerfile").read_text(encoding="utf-8")
    except OSError:
        return {}
    from s3sync.package.image_context import dockerfile_env  # noqa: PLC0415

    return dockerfile_env(text)
