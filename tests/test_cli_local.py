"""`s3sync local` and `s3sync demo` as a user runs them: subprocesses, real servers, exit codes, messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3sync.local.servers import RcloneS3Server
from s3sync.transfer.endpoints import Endpoint, s3_client

MiB = 2**20
S3SYNC = [str(Path(sys.executable).parent / "s3sync")]


def run(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*S3SYNC, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def client(server: RcloneS3Server):
    return s3_client(Endpoint("us-east-1", server.endpoint_url, server.access_key_id, server.secret_access_key))


@pytest.mark.system
def test_local_copies_between_two_s3_servers_until_idle(tmp_path):
    objects = {"a/one.bin": os.urandom(7 * MiB + 3), "b/two words.txt": b"two words", "empty": b""}
    with RcloneS3Server() as src, RcloneS3Server(access_key_id="dest-id", secret_access_key="dest-s3cr3t") as dst:
        s3 = client(src)
        s3.create_bucket(Bucket="from-here")
        for key, data in objects.items():
            s3.put_object(Bucket="from-here", Key=key, Body=data)
        result = run("local", "--until-idle", "--timeout", "180", "--source-bucket", "from-here",
                     "--dest-bucket", "to-there",
                     "--source-endpoint-url", src.endpoint_url, "--source-access-key-id", src.access_key_id,
                     "--source-secret-access-key", src.secret_access_key, "--dest-endpoint-url", dst.endpoint_url,
                     "--part-size-mib", "5", "--state-dir", str(tmp_path),
                     env={"S3SYNC_DEST_ACCESS_KEY_ID": "dest-id", "S3SYNC_DEST_SECRET_ACCESS_KEY": "dest-s3cr3t"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert "3 done, 0 failed, 0 unfinished" in result.stdout  # the summary on stdout, as the demo's
        assert f"upload to:  s3://from-here/ at {src.endpoint_url}" in result.stdout
        d = client(dst)
        for key, data in objects.items():
            assert d.get_object(Bucket="to-there", Key=key)["Body"].read() == data
        logs = result.stdout + result.stderr + "".join(p.read_text() for p in tmp_path.rglob("*.log"))
        assert "dest-s3cr3t" not in logs


@pytest.mark.parametrize("args, message", [
    (["local", "--min-tasks", "3", "--max-tasks", "1"], "--min-tasks 3 cannot exceed --max-tasks 1"),
    (["local", "--dest-access-key-id", "only-the-id"], "no dest secret access key given"),  # asked; no answer
    (["local", "--endpoint-url", "http://127.0.0.1:9", "--until-idle"], "setting up the local system failed"),
    (["demo", "--from", "/nonexistent-dir"], "does not exist"),
])
@pytest.mark.system
def test_user_mistakes_get_one_line_not_a_traceback(args, message):
    result = run(*args, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.system
def test_demo_moves_a_small_sample_set_and_checks_every_byte():
    result = run("demo", "--scale-mib", "24", timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "objects identical" in result.stdout
    assert "dead-letter queue: 0" in result.stdout


@pytest.mark.system
def test_local_says_where_the_destination_keys_are_kept_and_forgets_them(fresh_moto, rclone_server, boto_client,
                                                                         tmp_path):
    """Issue 18 item 6: with real keys, `local` says that they sit in the control plane's secret store (a server
    anyone on the machine can call); a control plane that outlives the run keeps no key after it; a secret on the
    command line is warned about."""
    key_id, secret = rclone_server.access_key_id, rclone_server.secret_access_key
    result = run("local", "--until-idle", "--timeout-seconds", "120", "--endpoint-url", fresh_moto.endpoint_url,
                 "--dest-endpoint-url", rclone_server.endpoint_url, "--dest-access-key-id", key_id,
                 "--dest-secret-access-key", secret, "--state-dir", str(tmp_path),
                 env={"S3SYNC_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the destination keys are in the control plane's secret store (s3sync-dest-credentials)" in result.stdout
    assert "warning: --dest-secret-access-key on the command line is visible" in result.stderr
    sm = boto_client("secretsmanager")
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.describe_secret(SecretId="s3sync-dest-credentials")
    assert secret not in result.stdout + result.stderr
