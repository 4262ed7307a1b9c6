"""Plain functions behind `s3sync render`, `s3sync links` and `s3sync lint`; the CLI only parses and calls them.

User mistakes raise `UserError` (one line at the CLI edge); nothing here calls AWS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from s3sync.aws import resolve_region
from s3sync.contract import DEFAULT_ECS_STACK, DEFAULT_LAMBDA_STACK
from s3sync.errors import UserError
from s3sync.stacks import FORMATS, STACKS, StackBuilder, StackConfig, render_all
from s3sync.stacks.common import SETTINGS_PARAMETER, settings_parameter_name

DEFAULT_DIR = Path("templates")
DEFAULT_REGION = "us-east-1"  # where the original's quick-create links point

_REGION = re.compile(r"[a-z]{2}-[a-z]+-\d{1,2}")
STACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}")
# Path-style or virtual-hosted S3 endpoints, in either partition: CloudFormation only reads templates from S3.
_S3_HOST = re.compile(r"([a-z0-9.-]+\.)?s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?")

#: The partitions the stacks deploy in: id -> (its regions' prefix, endpoint domain, console). China (aws-cn) has its
#: own domain for endpoints, amazonaws.com.cn ("The endpoint domain for both the Beijing and Ningxia Regions is
#: amazonaws.com.cn", https://docs.amazonaws.cn/en_us/general/latest/gr/endpoints-Ningxia.html) and its own console,
#: console.amazonaws.cn (https://docs.amazonaws.cn/en_us/aws/latest/userguide/general-info.html: "The domain for
#: Amazon Web Services China is www.amazonaws.cn"). Other partitions (GovCloud, the isolated ones) are not offered.
CHINA_REGION_PREFIX = "cn-"


def partition_of(region: str) -> str:
    return "aws-cn" if region.startswith(CHINA_REGION_PREFIX) else "aws"


def url_suffix(region: str) -> str:
    """AWS::URLSuffix of `region`: the domain of its endpoints."""
    return "amazonaws.com.cn" if partition_of(region) == "aws-cn" else "amazonaws.com"


def console_url(region: str) -> str:
    """The CloudFormation console of `region`."""
    if partition_of(region) == "aws-cn":
        return f"https://console.amazonaws.cn/cloudformation/home?region={region}"
    return f"https://{region}.console.aws.amazon.com/cloudformation/home?region={region}"


def do_render(
    out_dir: Path | str = DEFAULT_DIR,
    fmt: str = "yaml",
    config: StackConfig | None = None,
    builders: Mapping[str, type[StackBuilder]] | None = None,
) -> list[Path]:
    """Write `<out_dir>/ecs.<fmt>` and `<out_dir>/lambda.<fmt>`; returns the paths written.

    `config` and `builders` are for library users (see `s3sync.stacks.render_all`); the CLI renders the defaults.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in render_all(config, fmt, builders).items():
            path = out / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise UserError(f"cannot write templates to {out}: {exc.strerror or exc}") from None
    return written


@dataclass(frozen=True)
class QuickCreateLink:
    template: str
    stack_name: str
    url: str


def do_links(
    template_base_url: str,
    region: str = DEFAULT_REGION,
    ecs_stack_name: str = DEFAULT_ECS_STACK,
    lambda_stack_name: str = DEFAULT_LAMBDA_STACK,
    *,
    ecs_parameters: Mapping[str, str] | None = None,
    lambda_parameters: Mapping[str, str] | None = None,
    documents: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[QuickCreateLink]:
    """Console quick-create links for both stacks, in deployment order (ecs first).

    `ecs_parameters` / `lambda_parameters` pre-fill the console (`param_<Name>=<value>`); every name must be a
    parameter of that template (one the console page shows with a label), and never a NoEcho one: a link is not a
    place for a secret. `documents` ({"ecs": {...}, "lambda": {...}}, the templates as dicts) are checked instead of
    the default rendering, for templates made with a custom config or builder.
    """
    check_region(region)
    base = _check_base_url(template_base_url, region)
    in_china = (urlsplit(base).hostname or "").endswith(".amazonaws.com.cn")
    if in_china != (partition_of(region) == "aws-cn"):
        where = "a China region's S3 (amazonaws.com.cn)" if in_china else "S3 outside China (amazonaws.com)"
        raise UserError(f"the templates are in {where}, but the stacks go to {region}: CloudFormation reads a "
                        "template from S3 in its own partition; upload them to a bucket in that region")
    for name in (ecs_stack_name, lambda_stack_name):
        if not STACK_NAME.fullmatch(name):
            raise UserError(f"invalid stack name {name!r}: a letter, then up to 127 letters, digits or hyphens")
    if ecs_stack_name == lambda_stack_name:
        raise UserError("the ECS and Lambda stacks need different names")
    console = console_url(region)
    links = []
    by_ecs_name = {"EcsStackName": ecs_stack_name}
    if SETTINGS_PARAMETER in template_parameters("lambda", documents):
        by_ecs_name[SETTINGS_PARAMETER] = settings_parameter_name(ecs_stack_name)
    for stem, stack_name, given in (
        ("ecs", ecs_stack_name, ecs_parameters or {}),
        ("lambda", lambda_stack_name, {**(lambda_parameters or {}), **by_ecs_name}),
    ):
        for key, value in by_ecs_name.items():
            if stem == "lambda" and (lambda_parameters or {}).get(key, value) != value:
                raise UserError(f"{key} follows the ECS stack's name: set the ECS stack name instead")
        declared = template_parameters(stem, documents)
        for key in sorted(given):
            if key not in declared:
                raise UserError(f"{stem}.yaml has no parameter {key!r}; it has {', '.join(sorted(declared))}")
            if _truthy(declared[key].get("NoEcho")):
                raise UserError(f"{key} is a NoEcho parameter: it cannot go into a link; enter it on the console page")
        template = f"{stem}.yaml"
        query = urlencode(
            {
                "templateURL": f"{base}/{template}",
                "stackName": stack_name,
                **{f"param_{k}": str(v) for k, v in sorted(given.items())},
            },
            quote_via=quote,
        )
        links.append(QuickCreateLink(template, stack_name, f"{console}#/stacks/quickcreate?{query}"))
    return links


def template_parameters(
    stem: str, documents: Mapping[str, Mapping[str, Any]] | None = None
) -> Mapping[str, Mapping[str, Any]]:
    """Parameter name -> declaration (Type, Default, NoEcho, ...) of `ecs` or `lambda`; the default rendering
    unless `documents` gives the template as a dict."""
    if documents is not None and stem in documents:
        return documents[stem].get("Parameters", {})
    template = STACKS[stem](StackConfig()).build()
    return template.to_dict().get("Parameters", {})


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


_REGION_IN_HOST = re.compile(r"(?:^|\.)s3[.-](?:dualstack\.)?([a-z]{2}-[a-z]+-\d{1,2})\.amazonaws\.com(?:\.cn)?$")


def region_of_url(url: str) -> str | None:
    """The region an S3 URL names (`bucket.s3.eu-west-1.amazonaws.com`, `s3-us-west-2.amazonaws.com`, ...); None
    for the global endpoint (`s3.amazonaws.com`), an s3:// URL or anything else."""
    host = urlsplit(url.strip()).hostname or ""
    m = _REGION_IN_HOST.search(host)
    return m.group(1) if m else None


def links_region(template_base_url: str, region: str | None = None,
                 profile: str | None = None) -> tuple[str, str]:  # fmt: skip
    """(region, where it came from) for `s3sync links`: the option, else the region the template URL names, else
    the environment's (AWS_REGION, AWS_DEFAULT_REGION, the profile), else us-east-1 (where s3.amazonaws.com is)."""
    if region:
        return region, "--region"
    found = region_of_url(template_base_url)
    if found:
        return found, "the template URL"
    env, source = resolve_region(None, profile)
    if env:
        return env, source
    return DEFAULT_REGION, "the default: no region in the URL or the environment"


def s3_url(bucket: str, region: str, key: str = "") -> str:
    """The https URL CloudFormation and the console read `key` of `bucket` in `region` from (no trailing slash).

    Virtual-hosted style, or path style for a bucket name with dots (its name would break the TLS wildcard).
    """
    path = quote(key.strip("/"), safe="/")
    if "." in bucket:
        url = f"https://s3.{region}.{url_suffix(region)}/{bucket}"
    else:
        url = f"https://{bucket}.s3.{region}.{url_suffix(region)}"
    return f"{url}/{path}" if path else url


def check_region(region: str) -> None:
    """A region of a partition the stacks deploy in: a global (commercial) one such as us-east-1, or a China one."""
    if region.startswith("us-gov-"):
        raise UserError(f"{region} is an AWS GovCloud region: the stacks deploy in the global regions and in China")
    if not _REGION.fullmatch(region):
        raise UserError(f"invalid region {region!r}: expected an AWS region such as us-east-1 or cn-north-1")


def _check_base_url(url: str, region: str = DEFAULT_REGION) -> str:
    """The https URL of the templates' folder; `s3://bucket/prefix/` becomes the bucket's URL in `region`."""
    if url.strip().startswith("s3://"):
        bucket, _, prefix = url.strip()[len("s3://"):].partition("/")
        if not bucket:
            raise UserError(f"invalid template base URL {url!r}: expected s3://<bucket>/<prefix>")
        return s3_url(bucket, region, prefix)
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise UserError(
            f"invalid template base URL {url!r}: expected https://<bucket>.s3.<region>.amazonaws.com[.cn]/<prefix> "
            "or s3://<bucket>/<prefix>"
        )
    if parts.query or parts.fragment:
        raise UserError(f"invalid template base URL {url!r}: no query string or fragment, only the folder")
    if not _S3_HOST.fullmatch(parts.hostname):
        raise UserError(f"template base URL {url!r} is not an S3 URL: CloudFormation reads templates from S3 only")
    return url.strip().rstrip("/")


# --- lint -----------------------------------------------------------------------------------------------------------
def lint_text(text: str, regions: Sequence[str] = (DEFAULT_REGION,)) -> list[Any]:
    """cfn-lint findings (errors, warnings and informational) for one template text, in-process."""
    from cfnlint.api import ManualArgs, lint  # imported here: cfn-lint loads its rule set on import

    return list(lint(text, config=ManualArgs(include_checks=["I"], regions=list(regions))))


def template_files(directory: Path | str = DEFAULT_DIR) -> list[Path]:
    """The rendered templates in `directory` (yaml preferred over json), ecs first."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d} is not a directory; run `s3sync render --out {d}` first")
    files = []
    for stem in STACKS:
        found = [d / f"{stem}.{fmt}" for fmt in FORMATS if (d / f"{stem}.{fmt}").is_file()]
        if not found:
            raise UserError(f"no {stem}.yaml or {stem}.json in {d}; run `s3sync render --out {d}` first")
        files.append(found[0])
    return files


def do_lint(directory: Path | str = DEFAULT_DIR, regions: Iterable[str] = (DEFAULT_REGION,)) -> list[str]:
    """Lint both templates of `directory`; one line per finding (`file:line:col: RULE message`), [] when clean."""
    regions = list(regions) or [DEFAULT_REGION]
    for region in regions:
        if not _REGION.fullmatch(region):
            raise UserError(f"invalid region {region!r}")
    findings = []
    for path in template_files(directory):
        for m in lint_text(path.read_text(encoding="utf-8"), regions):
            findings.append(f"{path}:{m.linenumber}:{m.columnnumber}: {m.rule.id} {m.message}")
    return findings
