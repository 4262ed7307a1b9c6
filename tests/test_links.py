"""Quick-create links: every commercial region, stackName, templateURL and parameter values where given, every
parameter labelled on the console page, and no NoEcho value in a URL."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.loaders import Loader

from s3sync.errors import UserError
from s3sync.render import do_links, s3_url, template_parameters
from s3sync.stacks import STACKS, StackConfig, build_ecs, build_lambda

BASE = "https://code-bucket.s3.eu-west-1.amazonaws.com/s3sync/v1"


def _partition_regions() -> dict[str, list[str]]:
    """Partition id -> its region names, from botocore's endpoint data (regions known to this botocore)."""
    data = Loader().load_data("partitions")
    out = {}
    for partition in data["partitions"]:
        pattern = re.compile(partition["regionRegex"])
        out[partition["id"]] = sorted(r for r in partition["regions"] if pattern.match(r))
    return out


PARTITIONS = _partition_regions()
COMMERCIAL = PARTITIONS["aws"]
CHINA = PARTITIONS["aws-cn"]
OTHERS = sorted(r for pid, regions in PARTITIONS.items() if pid not in ("aws", "aws-cn") for r in regions)
CHINA_BASE = "https://code-bucket.s3.cn-north-1.amazonaws.com.cn/s3sync/v1"


def query(url: str) -> tuple[str, dict[str, list[str]]]:
    """(console route, quick-create query) of a link."""
    route, _, q = urlsplit(url).fragment.partition("?")
    return route, parse_qs(q)


def test_botocore_knows_the_commercial_regions() -> None:
    assert len(COMMERCIAL) >= 30 and "us-east-1" in COMMERCIAL and "ap-southeast-7" in COMMERCIAL
    assert CHINA == ["cn-north-1", "cn-northwest-1"] and any(r.startswith("us-gov-") for r in OTHERS)


@pytest.mark.parametrize("region", CHINA)
def test_china_regions_link_to_the_china_console(region: str) -> None:
    """aws-cn: the console is console.amazonaws.cn and the templates come from S3 at amazonaws.com.cn."""
    base = s3_url("code-bucket", region, "s3sync/v1/")
    assert base == f"https://code-bucket.s3.{region}.amazonaws.com.cn/s3sync/v1"
    for link in do_links(base, region):
        url = urlsplit(link.url)
        assert url.netloc == "console.amazonaws.cn" and parse_qs(url.query) == {"region": [region]}
        assert query(link.url)[1]["templateURL"] == [f"{base}/{link.template}"]


@pytest.mark.parametrize(("base", "region"), [(CHINA_BASE, "us-east-1"), (BASE, "cn-northwest-1")])
def test_a_template_url_of_the_other_partition_is_refused(base: str, region: str) -> None:
    with pytest.raises(UserError, match="CloudFormation reads a template from S3 in its own partition"):
        do_links(base, region)


@pytest.mark.system
def test_package_uploads_to_a_china_bucket_and_links_the_china_console(
    fresh_moto: Any, boto_client: Any, tmp_path: Any
) -> None:
    """`s3sync package --bucket` in a China region: the bucket's region is found, the upload lands there, and the
    template URLs and links are China's."""
    from s3sync.package import do_package

    s3 = boto_client("s3", region_name="cn-north-1")
    s3.create_bucket(Bucket="code-bucket-cn", CreateBucketConfiguration={"LocationConstraint": "cn-north-1"})
    result = do_package(tmp_path / "out", bucket="code-bucket-cn", prefix="s3sync/", region="cn-north-1",
                        endpoint_url=fresh_moto.endpoint_url)  # fmt: skip
    assert result.upload is not None and result.upload.region == "cn-north-1"
    assert result.upload.template_urls["ecs.yaml"] == "https://code-bucket-cn.s3.cn-north-1.amazonaws.com.cn/s3sync/ecs.yaml"
    assert all(urlsplit(link.url).netloc == "console.amazonaws.cn" for link in result.upload.links)
    assert s3.head_object(Bucket="code-bucket-cn", Key="s3sync/lambda.yaml")["ContentLength"] > 0
    # without --region the bucket's region decides (found from any region)
    found = do_package(tmp_path / "out", bucket="code-bucket-cn", endpoint_url=fresh_moto.endpoint_url)
    assert found.upload is not None and found.upload.region == "cn-north-1"


@pytest.mark.parametrize("region", COMMERCIAL)
def test_every_commercial_region_is_accepted(region: str) -> None:
    ecs, lam = do_links(BASE, region)
    for link in (ecs, lam):
        url = urlsplit(link.url)
        assert url.netloc == f"{region}.console.aws.amazon.com"
        assert url.path == "/cloudformation/home" and parse_qs(url.query) == {"region": [region]}
        assert query(link.url)[0] == "/stacks/quickcreate"


@pytest.mark.parametrize("region", [*OTHERS, "us-east", "US-EAST-1", "eusc-de-east-1", ""])
def test_other_partitions_and_malformed_regions_are_refused(region: str) -> None:
    with pytest.raises(UserError, match="region"):
        do_links(BASE, region)


def test_links_carry_stack_name_template_url_and_given_parameters() -> None:
    ecs, lam = do_links(
        BASE, "eu-west-1", "dataStack", "controlStack",
        ecs_parameters={"ImageUri": "1.dkr.ecr/x:1", "DestBucket": "dest-bucket", "MinTasks": "0"},
        lambda_parameters={"MaxTasks": "20", "Email": "ops+s3sync@example.com"},
    )  # fmt: skip
    assert (ecs.template, ecs.stack_name, lam.template, lam.stack_name) == (
        "ecs.yaml", "dataStack", "lambda.yaml", "controlStack",
    )  # fmt: skip
    assert query(ecs.url)[1] == {
        "templateURL": [f"{BASE}/ecs.yaml"],
        "stackName": ["dataStack"],
        "param_ImageUri": ["1.dkr.ecr/x:1"],
        "param_DestBucket": ["dest-bucket"],
        "param_MinTasks": ["0"],
    }
    assert query(lam.url)[1] == {
        "templateURL": [f"{BASE}/lambda.yaml"],
        "stackName": ["controlStack"],
        "param_EcsStackName": ["dataStack"],  # always: the lambda stack imports from the ECS stack by name
        "param_EcsSettings": ["/s3sync/dataStack/settings"],  # and reads the settings parameter it writes
        "param_MaxTasks": ["20"],
        "param_Email": ["ops+s3sync@example.com"],  # '+' survives the URL encoding
    }
    assert "+" not in urlsplit(lam.url).fragment  # encoded as %2B, never read back as a space


def test_links_without_parameters_carry_only_the_stack_names() -> None:
    ecs, lam = do_links(BASE)
    assert set(query(ecs.url)[1]) == {"templateURL", "stackName"}
    assert set(query(lam.url)[1]) == {"templateURL", "stackName", "param_EcsStackName", "param_EcsSettings"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ecs_parameters": {"MaxTasks": "3"}}, "ecs.yaml has no parameter 'MaxTasks'"),
        ({"lambda_parameters": {"Nope": "1"}}, "lambda.yaml has no parameter 'Nope'"),
        ({"ecs_parameters": {"DestSecretAccessKey": "x" * 40}}, "NoEcho"),
        ({"ecs_parameters": {"DestAccessKeyId": "AKIAIOSFODNN7EXAMPLE"}}, "NoEcho"),
        ({"lambda_parameters": {"EcsStackName": "other"}}, "ECS stack"),
        ({"lambda_parameters": {"EcsSettings": "/s3sync/other/settings"}}, "ECS stack"),
    ],
)
def test_links_refuse_unknown_and_noecho_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as info:
        do_links(BASE, **kwargs)
    assert "EXAMPLE" not in str(info.value) and "xxxx" not in str(info.value)  # the secret is not repeated


@pytest.mark.parametrize("stem", list(STACKS))
def test_every_parameter_is_labelled_and_grouped_on_the_console_page(stem: str) -> None:
    for config in (StackConfig(), StackConfig(code_bucket="code-bucket", code_key="k.zip", image_uri="i:1")):
        doc = (build_ecs if stem == "ecs" else build_lambda)(config).to_dict()
        interface = doc["Metadata"]["AWS::CloudFormation::Interface"]
        labels = interface["ParameterLabels"]
        grouped = [p for g in interface["ParameterGroups"] for p in g["Parameters"]]
        assert sorted(grouped) == sorted(doc["Parameters"]) and len(grouped) == len(set(grouped))
        for name in doc["Parameters"]:
            assert labels[name]["default"].strip(), name
        assert set(template_parameters(stem)) == set(doc["Parameters"])


def test_every_settable_parameter_can_go_into_a_link() -> None:
    """Each parameter the console labels, NoEcho ones aside, is accepted as a link value."""
    for stem in STACKS:
        declared = template_parameters(stem)
        values = {k: "1" for k, d in declared.items()
                  if not d.get("NoEcho") and k not in ("EcsStackName", "EcsSettings")}
        kwargs = {f"{stem}_parameters": values}
        link = do_links(BASE, **kwargs)[0 if stem == "ecs" else 1]
        assert {k for k in query(link.url)[1] if k.startswith("param_")} >= {f"param_{k}" for k in values}


def test_s3_urls_that_cloudformation_reads() -> None:
    assert s3_url("code-bucket", "eu-west-1", "s3sync/v1/") == "https://code-bucket.s3.eu-west-1.amazonaws.com/s3sync/v1"
    assert s3_url("code-bucket", "us-east-1", "a b.yaml") == "https://code-bucket.s3.us-east-1.amazonaws.com/a%20b.yaml"
    assert s3_url("my.bucket", "ap-south-1", "t.yaml") == "https://s3.ap-south-1.amazonaws.com/my.bucket/t.yaml"
    assert s3_url("code-bucket", "us-west-2") == "https://code-bucket.s3.us-west-2.amazonaws.com"
    do_links(s3_url("my.bucket", "ap-south-1", "p/"), "ap-south-1")  # both styles pass the link's URL check
