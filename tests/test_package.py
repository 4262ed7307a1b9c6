"""`s3sync package`: a deterministic Lambda zip with only the runtime, the worker image context, the templates with the
code location as defaults, their size limits, and the upload to S3 (moto's server)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from s3sync import contract, sdk
from s3sync.cli import cli
from s3sync.deploy import check_value
from s3sync.errors import UserError
from s3sync.package import do_package, normalize_prefix
from s3sync.package.image_context import dockerfile_sources
from s3sync.package.lambda_zip import build_zip, lambda_files, sdk_entries
from s3sync.package.sources import source_root
from s3sync.package.templates import INLINE_TEMPLATE_LIMIT, S3_TEMPLATE_LIMIT, inline_body, load_template
from s3sync.stacks import StackConfig, render_all

ROOT = source_root()
RUNTIME = {"s3sync/__init__.py", "s3sync/contract.py", "s3sync/errors.py"}
LOCKS = ("requirements/runtime.txt", "requirements/image-build.txt")


def sdk_wheels() -> list[sdk.Wheel]:
    return sdk.fetch(sdk.read_lock(ROOT / sdk.RUNTIME_LOCK))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return do_package(tmp_path_factory.mktemp("pkg") / "out",
                      image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/s3sync:1")


def copy_sources(target: Path, *, mode: int, mtime: int, reverse: bool) -> Path:
    """A copy of what packaging reads, written in another order with other permissions and times."""
    files = [*lambda_files(ROOT), *((n, ROOT / n) for n in ("container/Dockerfile", "container/__init__.py",
                                                            "container/worker.py", *LOCKS))]  # fmt: skip
    for name, path in sorted(files, reverse=reverse):
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        dest.chmod(mode)
        os.utime(dest, (mtime, mtime))
    return target


# --- the Lambda zip ---------------------------------------------------------------------------------------------------
@pytest.mark.system
def test_zip_holds_the_handlers_the_runtime_and_the_pinned_sdk_only(packaged: Any) -> None:
    names = zipfile.ZipFile(packaged.zip_path).namelist()
    assert names == sorted(names)
    # the SDK: exactly what installing the locked wheels puts in site-packages, at the zip's root
    sdk_names = {name for name, _ in sdk_entries(sdk_wheels())}
    assert sdk_names <= set(names)
    assert {"boto3/__init__.py", "botocore/__init__.py", "botocore-1.44.8.dist-info/METADATA"} <= sdk_names
    names = [n for n in names if n not in sdk_names]
    assert {n.split("/")[0] for n in names} == {"functions", "s3sync"}
    assert RUNTIME <= set(names)
    for handler in contract.HANDLERS.values():
        assert handler.rsplit(".", 1)[0].replace(".", "/") + ".py" in names
    transfer = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "s3sync" / "transfer").glob("*.py"))
    assert [n for n in names if n.startswith("s3sync/transfer/")] == transfer
    for n in names:
        assert n.endswith(".py") and "__pycache__" not in n, n
        assert n in RUNTIME or n.startswith(("functions/", "s3sync/transfer/")), f"{n} does not belong in Lambda"


def test_zip_entries_have_fixed_time_mode_and_compression(packaged: Any) -> None:
    for info in zipfile.ZipFile(packaged.zip_path).infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        assert info.external_attr >> 16 == 0o100644, info.filename
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.create_system == 3


@pytest.mark.system
def test_zip_is_deterministic_whatever_the_file_times_modes_and_order(tmp_path: Path, packaged: Any) -> None:
    a = copy_sources(tmp_path / "a", mode=0o600, mtime=1_000_000_000, reverse=False)
    b = copy_sources(tmp_path / "b", mode=0o755, mtime=1_700_000_000, reverse=True)
    wheels = sdk_entries(sdk_wheels())
    zip_a, zip_b = build_zip([*lambda_files(a), *wheels]), build_zip([*lambda_files(b), *wheels])
    assert zip_a == zip_b
    assert hashlib.sha256(zip_a).hexdigest() == packaged.zip_sha256  # the same bytes as the checkout's package
    # A second package run gives the same bytes, hash and key; a changed source gives another hash and key.
    again = do_package(tmp_path / "again", root=a)
    assert (again.zip_sha256, again.code_key) == (packaged.zip_sha256, packaged.code_key)
    assert again.zip_path.read_bytes() == packaged.zip_path.read_bytes()
    assert packaged.code_key == f"s3sync-functions-{packaged.zip_sha256[:16]}.zip"
    (a / "s3sync" / "transfer" / "plan.py").write_text((a / "s3sync/transfer/plan.py").read_text() + "\n# changed\n")
    changed = do_package(tmp_path / "again", root=a)
    assert changed.zip_sha256 != packaged.zip_sha256 and changed.code_key != packaged.code_key
    assert [p.name for p in (tmp_path / "again").glob("*.zip")] == [changed.zip_path.name]  # the old zip is gone


def test_zip_imports_every_handler_without_dev_dependencies(tmp_path: Path, packaged: Any) -> None:
    """Extracted alone, with no site-packages (python -S), the dev packages and the rest of s3sync made
    unimportable, every handler imports, on the zip's own boto3 and botocore of the locked versions."""
    zipfile.ZipFile(packaged.zip_path).extractall(tmp_path / "task")
    versions = {p.name: p.version for p in sdk.read_lock(ROOT / sdk.RUNTIME_LOCK)}
    code = f"""
import importlib, importlib.abc, importlib.metadata, sys
BLOCKED = ("troposphere", "awacs", "click", "rich", "cfnlint", "moto", "pytest", "yaml", "container", "tests",
           "s3sync.stacks", "s3sync.local", "s3sync.cli", "s3sync.render", "s3sync.package", "s3sync.deploy")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(BLOCKED):
            raise ImportError("blocked in the Lambda runtime: " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(tmp_path / "task")!r})
for handler in {sorted(contract.HANDLERS.values())!r}:
    module, _, fn = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), fn)), handler
import s3sync, functions
assert s3sync.__file__.startswith({str(tmp_path / "task")!r}), s3sync.__file__
assert functions.__file__.startswith({str(tmp_path / "task")!r}), functions.__file__
import boto3, botocore
for module in (boto3, botocore):
    assert module.__file__.startswith({str(tmp_path / "task")!r}), module.__file__
assert {{name: importlib.metadata.version(name) for name in {sorted(versions)!r}}} == {versions!r}
assert botocore.__version__ == {versions["botocore"]!r}
print("ok")
"""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


# --- the worker image build context -----------------------------------------------------------------------------------
def test_image_context_is_the_dockerfile_and_what_it_copies(packaged: Any) -> None:
    files = {p.relative_to(packaged.image_dir).as_posix() for p in packaged.image_dir.rglob("*") if p.is_file()}
    assert files == {*packaged.image_files, ".dockerignore"}
    assert "container/Dockerfile" in files and "container/worker.py" in files
    assert RUNTIME <= files
    assert not any(f.startswith(("s3sync/stacks", "s3sync/local", "s3sync/cli", "tests", "functions")) for f in files)
    locked = {p.sha256: p for p in (*sdk.read_lock(ROOT / LOCKS[0]), *sdk.read_lock(ROOT / LOCKS[1]))}
    wheels = [n for n in packaged.image_files if n.startswith("wheels/")]
    assert sorted(locked[sdk.sha256_file(packaged.image_dir / n)].name for n in wheels) == sorted(
        p.name for p in locked.values())  # every locked wheel, with its hash, and nothing else
    for name in packaged.image_files:
        if name not in wheels:
            assert (packaged.image_dir / name).read_bytes() == (ROOT / name).read_bytes(), name
    # Every COPY source of the Dockerfile is in the context.
    for src in dockerfile_sources((ROOT / "container/Dockerfile").read_text()):
        assert any(f == src or f.startswith(src + "/") for f in files), src
    manifest = json.loads((packaged.out_dir / "package.json").read_text())
    assert manifest["image"]["sha256"] == packaged.image_sha256
    assert manifest["lambda"]["sha256"] == packaged.zip_sha256
    # the SDK's versions are recorded for both artifacts, with each wheel's name and hash
    pins = {p.name: p for p in sdk.read_lock(ROOT / LOCKS[0])}
    assert manifest["lambda"]["packages"] == manifest["image"]["packages"] == {n: p.version for n, p in pins.items()}
    assert manifest["image"]["installer"] == {p.name: p.version for p in sdk.read_lock(ROOT / LOCKS[1])}
    for name, wheel in manifest["sdk"]["wheels"].items():
        assert f"wheels/{wheel['wheel']}" in files and wheel["sha256"] == locked[wheel["sha256"]].sha256, name


def test_dockerfile_sources_reads_copy_and_add_lines() -> None:
    text = (
        "FROM python:3.12-slim AS build\n# COPY not/this\nCOPY --chown=1:1 a.py b/ dest/\n"
        'ADD ["c d/e.txt", "/x/"]\nCOPY --from=build /app /app\nRUN echo \\\n  COPY no\nCOPY f \\\n  g/\n'
    )
    assert dockerfile_sources(text) == ["a.py", "b", "c d/e.txt", "f"]
    with pytest.raises(UserError, match="plain paths"):
        dockerfile_sources("COPY *.py /app/\n")


def test_package_never_replaces_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "worker-image").mkdir()
    (tmp_path / "worker-image" / "mine.txt").write_text("x")
    assert "not written by" in one_line_error(run("package", "--out", str(tmp_path)))
    assert (tmp_path / "worker-image" / "mine.txt").exists()
    assert "source directory" in one_line_error(run("package", "--out", str(ROOT / "s3sync")))


# --- templates --------------------------------------------------------------------------------------------------------
def test_templates_carry_the_code_location_as_parameter_defaults(packaged: Any) -> None:
    lam = packaged.documents["lambda"]["Parameters"]
    ecs = packaged.documents["ecs"]["Parameters"]
    assert lam["CodeKey"]["Default"] == packaged.code_key
    assert "Default" not in lam["CodeBucket"]  # no bucket given: the deployer enters it
    assert ecs["ImageUri"]["Default"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/s3sync:1"
    for stem, doc in packaged.documents.items():
        for name, decl in doc["Parameters"].items():
            if "Default" in decl and not decl.get("Type", "").startswith("AWS::"):
                check_value(stem, name, decl, str(decl["Default"]))  # every default passes its own constraints
    # Apart from those defaults, the packaged templates are the checked-in rendering.
    fresh = render_all()
    for name, path in packaged.templates.items():
        doc = yaml.safe_load(path.read_text())
        base = yaml.safe_load(fresh[name])
        for p in ("CodeKey", "ImageUri"):
            doc["Parameters"].get(p, {}).pop("Default", None)
        assert doc == base, name


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_templates_stay_under_cloudformation_size_limits(fmt: str) -> None:
    """From S3 1 MB in both formats; inline (TemplateBody) 51,200 bytes for the compact JSON deploy sends; with the
    longest code location defaults."""
    longest = StackConfig(code_bucket="b" * 63, code_key="k/" * 300 + "s3sync-functions-0123456789abcdef.zip",
                          image_uri="123456789012.dkr.ecr.ap-southeast-7.amazonaws.com/" + "r" * 200 + ":"
                          + "t" * 128)
    for config in (None, longest):
        for name, text in render_all(config, fmt).items():
            size = len(text.encode("utf-8"))
            assert size < S3_TEMPLATE_LIMIT
            body = inline_body(load_template(text))
            assert body is not None, f"{name}: over {INLINE_TEMPLATE_LIMIT} bytes even as compact JSON"
            assert json.loads(body) == load_template(text)


def test_a_template_over_the_s3_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("s3sync.package.S3_TEMPLATE_LIMIT", 24_000)  # instead of a 1 MB template: the same check
    with pytest.raises(UserError, match=r"ecs.yaml is \d+ bytes: CloudFormation reads at most 24000 from S3"):
        do_package(tmp_path)


# --- upload -----------------------------------------------------------------------------------------------------------
@pytest.mark.system
def test_package_uploads_and_prints_template_urls_and_links(fresh_moto: Any, boto_client: Any, tmp_path: Path) -> None:
    s3 = boto_client("s3")
    s3.create_bucket(Bucket="code-bucket")
    result = run("package", "--out", str(tmp_path), "--bucket", "code-bucket", "--prefix", "/s3sync/v1",
                 "--endpoint-url", fresh_moto.endpoint_url, "--param", "MaxTasks=20",
                 "--param", "ecs.MinTasks=0")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "package.json").read_text())
    key = manifest["lambda"]["code_key"]
    assert key.startswith("s3sync/v1/s3sync-functions-")
    zip_bytes = s3.get_object(Bucket="code-bucket", Key=key)["Body"].read()
    assert zip_bytes == (tmp_path / manifest["lambda"]["zip"]).read_bytes()
    assert hashlib.sha256(zip_bytes).hexdigest() == manifest["lambda"]["sha256"]
    for name in ("ecs.yaml", "lambda.yaml"):
        body = s3.get_object(Bucket="code-bucket", Key=f"s3sync/v1/{name}")["Body"].read()
        assert body == (tmp_path / name).read_bytes()
        assert f"https://code-bucket.s3.us-east-1.amazonaws.com/s3sync/v1/{name}" in result.output
    lam = yaml.safe_load((tmp_path / "lambda.yaml").read_text())["Parameters"]
    assert (lam["CodeBucket"]["Default"], lam["CodeKey"]["Default"]) == ("code-bucket", key)
    links = [line.strip() for line in result.output.splitlines() if "quickcreate" in line]
    assert len(links) == 2 and all(u.startswith("https://us-east-1.console.aws.amazon.com/") for u in links)
    assert "param_MinTasks=0" in links[0] and "param_MaxTasks" not in links[0]
    assert "param_MaxTasks=20" in links[1] and "param_MinTasks" not in links[1]
    assert "sha256 " + manifest["lambda"]["sha256"] in result.output


@pytest.mark.system
def test_package_to_a_missing_bucket_is_a_one_line_error(fresh_moto: Any, tmp_path: Path) -> None:
    result = run("package", "--out", str(tmp_path), "--bucket", "no-such-bucket", "--endpoint-url",
                 fresh_moto.endpoint_url)  # fmt: skip
    assert "no-such-bucket does not exist" in one_line_error(result)


@pytest.mark.system
def test_package_to_a_bucket_in_another_region_is_a_one_line_error(
    fresh_moto: Any, boto_client: Any, tmp_path: Path
) -> None:
    boto_client("s3", region_name="eu-west-1").create_bucket(
        Bucket="code-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    result = run("package", "--out", str(tmp_path), "--bucket", "code-eu", "--region", "us-east-1",
                 "--endpoint-url", fresh_moto.endpoint_url)  # fmt: skip
    assert "is in eu-west-1, but the stacks deploy in us-east-1" in one_line_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "Bad_Bucket"], "invalid bucket name"),
        (["--bucket", "code-bucket", "--prefix", "a b"], "invalid prefix"),
        (["--bucket", "code-bucket", "--prefix", "a/../b"], "invalid prefix"),
        (["--bucket", "code-bucket", "--region", "us-gov-west-1"], "GovCloud region"),  # China: tests/test_links.py
        (["--prefix", "x/"], "need --bucket"),
    ],
)
def test_package_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    usage = args[0] == "--prefix"  # options that cannot work together: a usage error (2)
    assert message in one_line_error(run("package", "--out", str(tmp_path), *args), 2 if usage else 1)


def test_prefix_is_normalized() -> None:
    assert [normalize_prefix(p) for p in ("", "/", "a", "/a/b", "a/b/")] == ["", "", "a/", "a/b/", "a/b/"]


def test_package_cli_without_a_bucket_builds_everything(tmp_path: Path) -> None:
    result = run("package", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ecs.yaml", "lambda.yaml", "package.json", "worker-image", json.loads((out / "package.json").read_text())
         ["lambda"]["zip"]]
    )  # fmt: skip
    assert "docker build -t s3sync-worker:" in result.output and "quickcreate" not in result.output


@pytest.mark.system
def test_without_a_region_the_bucket_s_region_is_the_stacks_region(
    fresh_moto: Any, boto_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto_client("s3", region_name="ap-southeast-2").create_bucket(
        Bucket="code-syd", CreateBucketConfiguration={"LocationConstraint": "ap-southeast-2"}
    )
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = do_package(tmp_path, bucket="code-syd", endpoint_url=fresh_moto.endpoint_url)
    assert result.upload is not None and result.upload.region == "ap-southeast-2"
    assert result.upload.template_urls["ecs.yaml"] == "https://code-syd.s3.ap-southeast-2.amazonaws.com/ecs.yaml"
    assert all(link.url.startswith("https://ap-southeast-2.console.aws.amazon.com/") for link in result.upload.links)
