"""`s3sync render / links / lint`: the plain do_* functions, and the CLI edge (one-line errors, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result

from s3sync.cli import cli
from s3sync.errors import UserError
from s3sync.render import do_links, do_lint, do_render
from s3sync.stacks import render_all

BASE = "https://my-bucket.s3.us-east-1.amazonaws.com/s3sync/v1/"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result: Result) -> str:
    """Exit status 1, a single `Error: ...` line, never a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


# --- render -----------------------------------------------------------------------------------------------------------
def test_do_render_writes_both_templates(tmp_path: Path) -> None:
    paths = do_render(tmp_path / "out")
    assert [p.name for p in paths] == ["ecs.yaml", "lambda.yaml"]
    fresh = render_all()
    assert all(p.read_text() == fresh[p.name] for p in paths)


def test_render_json(tmp_path: Path) -> None:
    result = run("render", "--out", str(tmp_path), "--format", "json")
    assert result.exit_code == 0, result.output
    assert "AWSTemplateFormatVersion" in json.loads((tmp_path / "ecs.json").read_text())
    assert (tmp_path / "lambda.json").is_file()


def test_render_defaults_to_templates_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("render")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == ["ecs.yaml", "lambda.yaml"]


def test_render_into_a_file_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        do_render(target)
    result = run("render", "--out", str(target))  # click checks the option first: a usage error
    assert result.exit_code == 2 and "is a file" in result.output and "Traceback" not in result.output


def test_render_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    result = run("render", "--out", str(tmp_path), "--format", "xml")
    assert result.exit_code == 2 and "Traceback" not in result.output


# --- links ------------------------------------------------------------------------------------------------------------
def test_links_default_to_the_original_stack_names_and_region() -> None:
    ecs, lam = do_links(BASE)
    for link, template, stack in ((ecs, "ecs.yaml", "ecsStack"), (lam, "lambda.yaml", "lamStackS")):
        url = urlsplit(link.url)
        assert url.netloc == "us-east-1.console.aws.amazon.com"
        assert parse_qs(url.query) == {"region": ["us-east-1"]}
        route, _, query = url.fragment.partition("?")
        assert route == "/stacks/quickcreate"
        params = parse_qs(query)
        assert params["templateURL"] == [BASE + template]
        assert params["stackName"] == [stack]
    assert parse_qs(urlsplit(lam.url).fragment.partition("?")[2])["param_EcsStackName"] == ["ecsStack"]


def test_links_cli_with_options() -> None:
    result = run("links", "--template-base-url", BASE.rstrip("/"), "--region", "eu-west-1",
                 "--ecs-stack-name", "s3syncData", "--lambda-stack-name", "s3syncControl")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("https://eu-west-1.console.aws.amazon.com/") == 2
    assert "stackName=s3syncData" in result.output and "param_EcsStackName=s3syncData" in result.output
    assert "templateURL=https%3A%2F%2Fmy-bucket.s3.us-east-1.amazonaws.com%2Fs3sync%2Fv1%2Flambda.yaml" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--region", "us-east"], "invalid region"),
        # a China region reads its templates from S3 in China (amazonaws.com.cn), not from this global URL
        (["--region", "cn-north-1"], "the templates are in S3 outside China (amazonaws.com), but the stacks go to"),
        (["--region", "us-gov-west-1"], "GovCloud region"),
        (["--ecs-stack-name", "1bad"], "invalid stack name"),
        (["--ecs-stack-name", "same", "--lambda-stack-name", "same"], "different names"),
    ],
)
def test_links_refuses_bad_options(args: list[str], message: str) -> None:
    assert message in assert_one_line_error(run("links", "--template-base-url", BASE, *args))


@pytest.mark.parametrize(
    "url",
    [
        "http://my-bucket.s3.amazonaws.com/x",
        "https://example.com/templates",
        "my-bucket/templates",
        "https://my-bucket.s3.amazonaws.com/x?versionId=1",
    ],
)
def test_links_refuses_a_template_url_cloudformation_cannot_read(url: str) -> None:
    assert "URL" in assert_one_line_error(run("links", "--template-base-url", url))


@pytest.mark.parametrize(
    "url",
    [
        "https://s3.amazonaws.com/my-bucket/t",
        "https://my-bucket.s3.amazonaws.com",
        "https://s3-us-west-2.amazonaws.com/b",
    ],
)
def test_links_accepts_s3_url_styles(url: str) -> None:
    assert len(do_links(url, region="ap-southeast-1")) == 2


def test_links_in_a_china_region_open_the_china_console_on_a_china_s3_url() -> None:
    """Issue 12 item 10: the templates claim aws-cn, so the links work there: S3 at amazonaws.com.cn (both URL
    styles), the console at console.amazonaws.cn."""
    for url in ("https://my-bucket.s3.cn-north-1.amazonaws.com.cn/s3sync/v1/",
                "https://s3.cn-north-1.amazonaws.com.cn/my.bucket/s3sync/v1"):  # fmt: skip
        result = run("links", "--template-base-url", url, "--region", "cn-north-1")
        assert result.exit_code == 0, result.output
        links = [line.strip() for line in result.output.splitlines() if line.startswith("  ")]
        assert len(links) == 2
        for link in links:
            parts = urlsplit(link)
            assert (parts.scheme, parts.netloc, parts.path) == ("https", "console.amazonaws.cn", "/cloudformation/home")
            assert parse_qs(parts.query) == {"region": ["cn-north-1"]}
            template = parse_qs(parts.fragment.partition("?")[2])["templateURL"][0]
            assert template.startswith(url.rstrip("/")) and template.endswith(".yaml")
    message = assert_one_line_error(run("links", "--template-base-url", "https://b.s3.cn-north-1.amazonaws.com.cn/p",
                                        "--region", "eu-west-1"))  # fmt: skip
    assert "the templates are in a China region's S3 (amazonaws.com.cn), but the stacks go to eu-west-1" in message


def test_links_needs_the_base_url() -> None:
    assert run("links").exit_code == 2


# --- lint -------------------------------------------------------------------------------------------------------------
@pytest.mark.system
def test_lint_passes_on_fresh_templates(tmp_path: Path) -> None:
    do_render(tmp_path)
    result = run("lint", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "no findings" in result.output


@pytest.mark.system
def test_lint_reports_findings_and_fails(tmp_path: Path) -> None:
    do_render(tmp_path)
    (tmp_path / "lambda.yaml").write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      VisibilityTimeout: forever\n"
    )
    findings = do_lint(tmp_path)
    assert findings and all(line.startswith(str(tmp_path / "lambda.yaml")) for line in findings)
    result = run("lint", str(tmp_path))
    assert "VisibilityTimeout" in result.output or "forever" in result.output
    assert "finding(s)" in assert_one_line_error(result)


def test_lint_without_templates_is_a_user_error(tmp_path: Path) -> None:
    assert "not a directory" in assert_one_line_error(run("lint", str(tmp_path / "missing")))
    assert "ecs.yaml" in assert_one_line_error(run("lint", str(tmp_path)))
