"""The worker image, built and run with a real Docker engine (issue 14): what ECS runs is tested as a container.

The image is built once per module from the context `s3sync package` writes, on the local base
(`s3sync image base`: Debian bookworm minbase with its python3, since no registry is reachable here; built if
missing, or named by S3SYNC_TEST_BASE_IMAGE). Containers use `--network host` and reach the local servers on
127.0.0.1. Where no Docker engine can run, the module is skipped with the reason, except under CI=true, where that
is a failure (`.ci/run` installs and starts one).

Each test prints one `[image] ...` line of figures (sizes, times).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3sync import contract
from s3sync.contract import Status
from s3sync.image import LOCAL_BASE, build_image, build_local_base, engine_error, inspect_image
from s3sync.local.faults import FaultProxy
from s3sync.local.iam import ROLE_POLICY_ENV
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.local.servers import RcloneS3Server
from s3sync.local.workers import task_definition
from s3sync.package import do_package
from s3sync.package.image_context import DOCKERFILE, WHEELS_DIR
from s3sync.transfer.checksums import multipart_etag, strip_etag
from tests.conftest import make_client

pytestmark = pytest.mark.timeout(600)

MiB = 1024 * 1024
IMAGE_TAG = "s3sync-worker:test"
S3SYNC = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "s3sync"


# --- fixtures ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine() -> None:
    reason = engine_error()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no Docker engine: {reason}")
        pytest.skip(f"no Docker engine here ({reason}); CI installs and starts one (.ci/run)")


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def emit(what: str, **values: Any) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[image] {what}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    return emit


@pytest.fixture(scope="module")
def base(engine: None, figures: Callable[..., None]) -> str:
    tag = os.environ.get("S3SYNC_TEST_BASE_IMAGE", LOCAL_BASE)
    if inspect_image(tag) is None and tag == LOCAL_BASE:
        result = build_local_base(tag)  # needs root and debootstrap; CI builds it before the tests
        figures("base built", tag=tag, size_mb=round(result.size / 1e6, 1), seconds=round(result.seconds, 1))
    assert inspect_image(tag) is not None, f"base image {tag} is missing"
    return tag


@pytest.fixture(scope="module")
def built(base: str, tmp_path_factory: pytest.TempPathFactory, figures: Callable[..., None]) -> Iterator[Any]:
    packaged = do_package(tmp_path_factory.mktemp("image") / "out")
    result = build_image(packaged.image_dir, tag=IMAGE_TAG, base_image=base)
    figures("built", tag=result.tag, size_mb=round(result.size / 1e6, 1), seconds=round(result.seconds, 1),
            base=base)
    yield packaged, result
    subprocess.run(["docker", "rmi", "--force", IMAGE_TAG], capture_output=True, timeout=120)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def in_image(image: str, code: str, *extra: str) -> Any:
    """Run a Python snippet in a fresh container of `image` (its user, no network); its JSON output."""
    done = docker("run", "--rm", "--network", "none", *extra, "--entrypoint", "python3", image, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# --- helpers for runs -------------------------------------------------------------------------------------------------
def start(runner: LocalRunner, on_tick: Callable[[LocalRunner], None] | None = None) -> tuple[threading.Thread, dict]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["summary"] = runner.run(on_tick=on_tick)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def finish(t: threading.Thread, out: dict, timeout: float = 240) -> Any:
    t.join(timeout)
    assert not t.is_alive(), "the runner did not stop"
    if "error" in out:
        raise out["error"]
    return out["summary"]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut by SIGKILL
                    pass
    return out


def rclone_spec(server: RcloneS3Server, bucket: str, endpoint_url: str | None = None,
                region: str = "us-east-1") -> BucketSpec:
    return BucketSpec(bucket, endpoint_url or server.endpoint_url, server.access_key_id, server.secret_access_key,
                      region)


def direct(server: RcloneS3Server) -> Any:
    return make_client("s3", server.endpoint_url, aws_access_key_id=server.access_key_id,
                       aws_secret_access_key=server.secret_access_key)


def expected_etag(data: bytes, job: Any) -> str:
    if not job.multipart:
        return hashlib.md5(data).hexdigest()
    return multipart_etag(hashlib.md5(data[i:i + job.part_size]).hexdigest()
                          for i in range(0, len(data), job.part_size))


def check_identical(runner: LocalRunner, dest: Any, summary: Any, objects: dict[str, bytes]) -> None:
    jobs = {j.source_key: j for j in summary.jobs}
    assert set(jobs) == set(objects)
    for key, data in objects.items():
        job = jobs[key]
        assert job.status == Status.DONE, (key, job.status, job.error)
        assert job.done == job.total and job.remaining == 0 and job.done_bytes == len(data), key
        assert dest.get_object(Bucket=runner.options.dest.name, Key=key)["Body"].read() == data, key
        assert strip_etag(job.dest_etag) == expected_etag(data, job), key
        # each part counted once (a small object copied by the splitter has none)
        assert len(runner.ledger.parts(job.job_id, job.attempt)) == (0 if job.inline else job.total), key


# --- the image --------------------------------------------------------------------------------------------------------
@pytest.mark.system
def test_the_image_builds_from_the_packaged_context(built: Any) -> None:
    packaged, result = built
    info = inspect_image(result.image_id)
    assert info is not None
    assert info["Config"]["Labels"]["s3sync.context-sha256"] == packaged.image_sha256
    assert info["Config"]["Entrypoint"] == list(contract.WORKER_COMMAND)  # the one the task definition relies on
    assert info["Config"]["StopSignal"] == "SIGTERM"
    assert info["Config"]["WorkingDir"] == "/app"
    # Built with no package index: every package came from the context's wheels (the build has no network path to
    # an index here), and the context is exactly what the manifest lists.
    manifest = json.loads((packaged.out_dir / "package.json").read_text())
    context = sorted(p.relative_to(packaged.image_dir).as_posix() for p in packaged.image_dir.rglob("*")
                     if p.is_file() and p.name != ".dockerignore")
    assert context == manifest["image"]["files"]


@pytest.mark.system
def test_image_build_command_prints_id_size_and_tag(built: Any, base: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from s3sync.cli import cli

    tag = "s3sync-worker:test-cli"
    try:
        result = CliRunner().invoke(cli, ["image", "build", "--out", str(tmp_path / "out"), "--base-image", base,
                                          "--tag", tag])
        assert result.exit_code == 0, result.output
        info = inspect_image(tag)
        assert info is not None
        assert f"image:  {info['Id']}" in result.output and f"tag:    {tag}" in result.output
        assert f"size:   {int(info['Size']) / 1e6:.1f} MB" in result.output
        manifest = json.loads((tmp_path / "out" / "package.json").read_text())
        assert info["Config"]["Labels"]["s3sync.context-sha256"] == manifest["image"]["sha256"]
    finally:
        docker("rmi", tag)


@pytest.mark.system
def test_the_image_runs_as_non_root_and_cannot_change_its_code(built: Any) -> None:
    _, result = built
    assert inspect_image(result.image_id)["Config"]["User"] == "10001"
    seen = in_image(result.tag, "import json, os, pathlib\n"
                    "def writable(p):\n"
                    "    try:\n"
                    "        pathlib.Path(p).write_text('x'); return True\n"
                    "    except OSError:\n"
                    "        return False\n"
                    "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'app': writable('/app/x'),\n"
                    "    'code': writable('/app/s3sync/transfer/worker.py'), 'lib': writable('/app/lib/x')}))")
    assert seen == {"uid": 10001, "gid": seen["gid"], "app": False, "code": False, "lib": False}
    assert seen["gid"] != 0


_LISTING = """
import hashlib, importlib.metadata as md, json, os, sys
def walk(top, skip=()):
    out = {}
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, top)] = hashlib.sha256(open(p, 'rb').read()).hexdigest()
    return out
lib = [d for d in md.distributions(path=['/app/lib'])]
recorded = set()
for d in lib:
    for f in d.files or []:
        recorded.add(os.path.normpath(os.path.join('/app/lib', str(f))))
print(json.dumps({
    'app': walk('/app', skip=('/app/lib',)) if os.path.isdir('/app') else {},
    'lib_files': sorted(os.path.join(r, f) for r, _, fs in os.walk('/app/lib') for f in fs),
    'lib_dists': {d.metadata['Name']: d.version for d in lib},
    'recorded': sorted(recorded),
    'all_dists': sorted({(d.metadata['Name'], d.version) for d in md.distributions()}),
    'build_dir': os.path.exists('/build'),
    'python': sys.version.split()[0],
}))
"""


@pytest.mark.system
def test_the_image_holds_only_the_files_and_packages_in_package_json(built: Any, base: str,
                                                                      figures: Callable[..., None]) -> None:
    packaged, result = built
    manifest = json.loads((packaged.out_dir / "package.json").read_text())
    image = in_image(result.tag, _LISTING)
    # /app: exactly the code files the manifest lists (not the Dockerfile, the lock or the wheels), byte for byte
    code = [f for f in manifest["image"]["files"]
            if f != DOCKERFILE and not f.startswith((f"{WHEELS_DIR}/", "requirements/"))]
    assert sorted(image["app"]) == sorted(code)
    for name in code:
        assert image["app"][name] == hashlib.sha256((packaged.image_dir / name).read_bytes()).hexdigest(), name
    # /app/lib: exactly the locked packages at their versions, and no file that none of them installed
    normalized = {k.lower().replace("_", "-"): v for k, v in image["lib_dists"].items()}
    assert normalized == manifest["image"]["packages"]
    assert set(image["lib_files"]) <= set(image["recorded"]), sorted(set(image["lib_files"]) - set(image["recorded"]))
    # the whole image: what the base has, plus the locked packages; nothing of the build stage (pip, the wheels)
    base_dists = {tuple(d) for d in in_image(base, _LISTING)["all_dists"]}
    added = {(n.lower().replace("_", "-"), v) for n, v in image["all_dists"]} - \
        {(n.lower().replace("_", "-"), v) for n, v in base_dists}
    assert added == set(manifest["image"]["packages"].items())
    assert not image["build_dir"] and "pip" not in normalized
    figures("contents", code_files=len(code), packages=len(normalized), lib_files=len(image["lib_files"]),
            python=image["python"], size_mb=round(result.size / 1e6, 1))


# --- runs through `s3sync local --worker-image` -----------------------------------------------------------------------
@pytest.mark.system
def test_the_worker_starts_with_only_the_task_definitions_environment(built: Any, moto_server: Any, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m container.worker` in the container gets the task definition's Environment, what ECS sets and the
    local stand-ins for AWS's endpoints and role: nothing of the runner's environment, and not the China keys (the
    task definition injects no secret: the worker reads it with its task role, issue 18 item 2)."""
    _, result = built
    monkeypatch.setenv("S3SYNC_CANARY", "from-the-runner-shell")  # must not reach the worker
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nowhere/ca.pem")  # nor this (it would break every TLS call)
    runner = LocalRunner(LocalOptions(endpoint_url=moto_server.endpoint_url, name="img-env", state_dir=tmp_path,
                                      source=BucketSpec("img-env-src"), dest=BucketSpec("img-env-dst"),
                                      min_tasks=1, max_tasks=1, worker_image=result.tag, timeout=120))
    t, out = start(runner)
    try:
        log = tmp_path / "logs" / "worker-1.log"
        wait_for(lambda: any(r["msg"] == "worker started" for r in log_lines(log)), 60, "the worker to start")
        name = runner.workers[0].name
        environ = docker("exec", name, "cat", "/proc/1/environ").stdout
        cmdline = docker("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")[:-1]
    finally:
        runner.stop()
        finish(t, out)
    env = dict(line.split("=", 1) for line in environ.split("\0") if line)
    image_env = dict(v.split("=", 1) for v in inspect_image(result.tag)["Config"]["Env"])
    expected = {k: v for k, v in runner.worker_env.items() if k != ROLE_POLICY_ENV}
    # what Docker adds by itself: HOSTNAME, HOME (from the image's passwd), PATH (its default, or the image's)
    assert set(env) == set(expected) | set(image_env) | {"HOSTNAME", "HOME", "PATH"}
    assert {k: env[k] for k in expected} == expected
    # the task definition's variables are there, resolved; what ECS sets too; no key of the China account
    _, task = task_definition(runner.stacks.ecs)
    assert {e["Name"] for e in task["Environment"]} <= set(env) and "Secrets" not in task
    assert env[contract.Env.QUEUE_URL] == runner.resources.queue_url and env["AWS_REGION"] == "us-east-1"
    assert contract.Env.DEST_ACCESS_KEY_ID not in env and contract.Env.DEST_SECRET_ACCESS_KEY not in env
    assert env[contract.Env.DEST_SECRET_ARN] == runner.resources.secret_arn
    assert env["AWS_EXECUTION_ENV"] == "AWS_ECS_EC2"
    assert "S3SYNC_CANARY" not in env and "AWS_CA_BUNDLE" not in env
    # the entry point of the image, then the task definition's Command (if any), as ECS runs them
    assert cmdline == [*contract.WORKER_COMMAND, *(runner.task.command or ())]


@pytest.mark.system
def test_a_container_worker_copies_multipart_and_small_objects_identical(built: Any, tmp_path: Path,
                                                                         figures: Callable[..., None]) -> None:
    """`s3sync local --worker-image` as a user runs it (a subprocess), rclone buckets on both sides."""
    _, result = built
    objects = {"img/multi.bin": os.urandom(12 * MiB + 12345), "img/exactly 5 MiB": os.urandom(5 * MiB),
               "img/small.txt": b"small", "img/empty": b"", "img/ünï cödé+%.bin": os.urandom(3000)}
    state = tmp_path / "state"
    with RcloneS3Server() as src, RcloneS3Server() as dst:
        src.create_bucket("img-src")
        dst.create_bucket("img-dst")
        for key, data in objects.items():
            direct(src).put_object(Bucket="img-src", Key=key, Body=data)
        env = {**os.environ, "S3SYNC_SOURCE_ACCESS_KEY_ID": src.access_key_id,
               "S3SYNC_SOURCE_SECRET_ACCESS_KEY": src.secret_access_key,
               "S3SYNC_DEST_ACCESS_KEY_ID": dst.access_key_id, "S3SYNC_DEST_SECRET_ACCESS_KEY": dst.secret_access_key}
        started = time.monotonic()
        local = subprocess.run(
            [str(S3SYNC), "local", "--until-idle", "--timeout", "180", "--source-bucket", "img-src",
             "--source-endpoint-url", src.endpoint_url, "--dest-bucket", "img-dst", "--dest-endpoint-url",
             dst.endpoint_url, "--part-size-mib", "5", "--max-tasks", "2", "--state-dir", str(state),
             "--worker-image", result.tag],
            capture_output=True, text=True, timeout=240, env=env)
        seconds = time.monotonic() - started
        assert local.returncode == 0, local.stderr[-3000:]
        for key, data in objects.items():
            assert direct(dst).get_object(Bucket="img-dst", Key=key)["Body"].read() == data, key
    lines = [r for f in sorted((state / "logs").glob("worker-*.log")) for r in log_lines(f)]
    copied = [r for r in lines if r["msg"] == "part copied"]
    assert copied and all(r["pid"] == 1 for r in lines if "pid" in r)  # the container's main process
    assert docker("ps", "--all", "--quiet", "--filter", "label=s3sync.local.run").stdout.strip() == ""
    figures("copy", objects=len(objects), bytes=sum(map(len, objects.values())), parts=len(copied),
            seconds=round(seconds, 1))


def _slow_run(moto_server: Any, src: RcloneS3Server, dst: RcloneS3Server, slow: FaultProxy, name: str,
              tmp_path: Path, image: str, visibility_timeout: int) -> LocalRunner:
    return LocalRunner(LocalOptions(
        endpoint_url=moto_server.endpoint_url, name=name, until_idle=True, part_size_mib=5, worker_threads=2,
        min_tasks=1, max_tasks=1, visibility_timeout=visibility_timeout, alarm_period=0.5, idle_grace=1.0,
        timeout=200, state_dir=tmp_path, worker_image=image,
        source=rclone_spec(src, f"{name}-src", slow.endpoint_url),
        dest=rclone_spec(dst, f"{name}-dst", region="cn-north-1")))


@pytest.mark.system
def test_docker_stop_releases_in_flight_parts_and_they_complete_elsewhere(built: Any, moto_server: Any,
                                                                         tmp_path: Path,
                                                                         figures: Callable[..., None]) -> None:
    """`docker stop` (SIGTERM, as ECS stops a task on scale-in): the worker stops receiving, gives its parts the
    grace period, releases those still copying at once, and exits 0 before the StopTimeout's SIGKILL; another
    container copies them long before the (120 s) visibility timeout would have returned them."""
    _, result = built
    name = "img-stop"
    data = os.urandom(15 * MiB)  # 3 parts: two copying, one waiting in the worker (threads + threads/2 held)
    objects = {"stop/big.bin": data}
    with RcloneS3Server() as src, RcloneS3Server() as dst:
        src.create_bucket(f"{name}-src")
        dst.create_bucket(f"{name}-dst")
        direct(src).put_object(Bucket=f"{name}-src", Key="stop/big.bin", Body=data)
        # 128 KiB/s: a 5 MiB part takes 40 s, longer than the worker's 20 s grace: it is still copying when released
        with FaultProxy(src.endpoint_url, bandwidth=128 * 1024) as slow:
            runner = _slow_run(moto_server, src, dst, slow, name, tmp_path, result.tag, visibility_timeout=120)
            first = tmp_path / "logs" / "worker-1.log"
            stopped: dict[str, Any] = {}

            def stop_when_copying(r: LocalRunner) -> None:
                if "thread" not in stopped and sum(x["msg"] == "copying part" for x in log_lines(first)) >= 2:
                    container = r.workers[0]
                    stopped["name"], stopped["at"] = container.name, time.monotonic()
                    stopped["thread"] = threading.Thread(target=lambda: stopped.setdefault(
                        "stop", subprocess.run(["docker", "stop", "--time", str(r.task.stop_timeout), container.name],
                                               capture_output=True, text=True, timeout=120)), daemon=True)
                    stopped["thread"].start()
                if "released" not in stopped and any(x["msg"] == "released in-flight parts" for x in log_lines(first)):
                    stopped["released"] = time.monotonic()
                    slow.bandwidth = None  # the parts go at full speed from now on, wherever they are copied

            summary = runner.run(on_tick=stop_when_copying)
            ended = time.monotonic()
        check_identical(runner, direct(dst), summary, objects)
    stopped["thread"].join(60)
    first_lines = log_lines(first)
    released = [x for x in first_lines if x["msg"] == "released in-flight parts"]
    assert released and released[0]["count"] >= 2, first_lines[-5:]
    assert not [x for x in first_lines if x["msg"] == "part copied"]  # none finished in the first container
    assert any(x["msg"] == "worker stopped" for x in first_lines)  # it exited by itself: no SIGKILL
    assert stopped["stop"].returncode == 0
    elsewhere = [x for f in sorted((tmp_path / "logs").glob("worker-*.log")) if f != first for x in log_lines(f)
                 if x["msg"] == "part copied"]
    assert sorted(x["part"] for x in elsewhere) == [1, 2, 3]
    assert ended - stopped["released"] < 60  # not after the 120 s visibility timeout
    figures("docker stop", released=released[0]["count"], grace_s=round(stopped["released"] - stopped["at"], 1),
            run_s=round(summary.elapsed, 1), after_release_s=round(ended - stopped["released"], 1))


@pytest.mark.system
def test_docker_kill_mid_part_loses_nothing(built: Any, moto_server: Any, tmp_path: Path,
                                             figures: Callable[..., None]) -> None:
    """`docker kill` (SIGKILL): the worker's parts come back after the visibility timeout, the replacement
    container copies them, every part is counted once and the object is byte-identical."""
    _, result = built
    name = "img-kill"
    data = os.urandom(11 * MiB + 7)  # 3 parts
    objects = {"kill/big.bin": data}
    with RcloneS3Server() as src, RcloneS3Server() as dst:
        src.create_bucket(f"{name}-src")
        dst.create_bucket(f"{name}-dst")
        direct(src).put_object(Bucket=f"{name}-src", Key="kill/big.bin", Body=data)
        with FaultProxy(src.endpoint_url, bandwidth=1 * MiB) as slow:  # a 5 MiB part takes 5 s
            runner = _slow_run(moto_server, src, dst, slow, name, tmp_path, result.tag, visibility_timeout=6)
            first = tmp_path / "logs" / "worker-1.log"
            killed: dict[str, Any] = {}

            def kill_mid_part(r: LocalRunner) -> None:
                if "kill" in killed:
                    return
                copying = [x for x in log_lines(first) if x["msg"] == "copying part"]
                if copying:
                    killed.setdefault("seen", time.monotonic())
                    if time.monotonic() - killed["seen"] >= 1.0:  # a second into the part: mid-GET
                        killed["kill"] = docker("kill", r.workers[0].name)
                        killed["at"] = time.monotonic()
                        slow.bandwidth = None

            summary = runner.run(on_tick=kill_mid_part)
        check_identical(runner, direct(dst), summary, objects)
    assert killed["kill"].returncode == 0
    first_lines = log_lines(first)
    assert not [x for x in first_lines if x["msg"] in ("part copied", "worker stopped", "released in-flight parts")]
    lines = [x for f in sorted((tmp_path / "logs").glob("worker-*.log")) for x in log_lines(f)]
    counted = [(x["job"], x["part"]) for x in lines if x["msg"] == "part copied"]
    assert sorted(counted) == sorted(set(counted)) and len(counted) == 3  # each part counted once
    assert summary.dlq_messages == 0
    figures("docker kill", run_s=round(summary.elapsed, 1), workers=len(list((tmp_path / "logs").glob("*.log"))))
