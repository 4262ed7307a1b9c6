"""The pinned SDK (s3sync.sdk): the lock, pyproject.toml and this environment agree, so the handler and worker tests
run on exactly the boto3/botocore that the Lambda zip and the worker image ship; its wheels are checked by hash."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path

import pytest
import tomllib

from s3sync import sdk
from s3sync.errors import UserError
from s3sync.package.sources import source_root

ROOT = source_root()
LOCK = sdk.read_lock(ROOT / sdk.RUNTIME_LOCK)


def test_the_lock_pins_boto3_botocore_and_everything_they_need() -> None:
    names = {p.name for p in LOCK}
    assert {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six"} == names
    # every requirement of a locked package is locked too (the image installs with --no-deps, the zip likewise)
    for pin in LOCK:
        for req in importlib.metadata.requires(pin.name) or []:
            if "extra ==" in req:
                continue
            name = sdk.normalize(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
            assert name in names, f"{pin.name} needs {req}, which the lock lacks"


def test_this_environment_runs_exactly_the_locked_versions() -> None:
    installed = {p.name: importlib.metadata.version(p.name) for p in LOCK}
    assert installed == {p.name: p.version for p in LOCK}
    import boto3
    import botocore

    assert (boto3.__version__, botocore.__version__) == (
        next(p.version for p in LOCK if p.name == "boto3"), next(p.version for p in LOCK if p.name == "botocore"))


def test_pyproject_pins_the_same_versions() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {}
    for dep in deps:
        name, sep, version = dep.partition("==")
        if sep:
            pinned[sdk.normalize(name.strip())] = version.strip()
    assert {name: pinned.get(name) for name in (p.name for p in LOCK)} == {p.name: p.version for p in LOCK}


def test_locked_wheels_are_pure_python_and_match_their_hashes() -> None:
    for wheel in sdk.fetch(LOCK):
        assert wheel.filename.endswith("-none-any.whl"), wheel.filename
        assert sdk.sha256_file(wheel.path) == wheel.pin.sha256
        assert wheel.filename.split("-")[1] == wheel.pin.version


def test_a_damaged_cached_wheel_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    six = next(p for p in LOCK if p.name == "six")
    good = sdk.fetch([six])[0]
    cache = tmp_path / "cache"
    (cache / six.sha256).mkdir(parents=True)
    damaged = cache / six.sha256 / good.filename
    shutil.copyfile(good.path, damaged)
    with open(damaged, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    monkeypatch.setenv(sdk.CACHE_ENV, str(cache))
    again = sdk.fetch([six])[0]  # from this machine's package index, as `s3sync package` does
    assert again.path.parent == cache / six.sha256 and sdk.sha256_file(again.path) == six.sha256


def test_a_wheel_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    six = next(p for p in LOCK if p.name == "six")
    wrong = sdk.Pin(six.name, six.version, "0" * 64)
    with pytest.raises(UserError, match="pip download failed"):
        sdk.fetch([wrong], cache=tmp_path)


def test_lock_lines_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "lock.txt"
    bad.write_text("boto3>=1.35\n")
    with pytest.raises(UserError, match="expected `name==version --hash=sha256:"):
        sdk.read_lock(bad)
