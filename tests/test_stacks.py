"""`s3sync.stacks` as a library: pure builders, a frozen config, IAM helpers that refuse wildcards, customization."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import awacs.kms as kms
import awacs.s3 as s3
import pytest
from awacs.aws import Action
from troposphere import Sub, Template

from s3sync.stacks import EcsStack, Ids, LambdaStack, StackConfig, build_ecs, build_lambda, iam, render, render_all
from s3sync.stacks.config import ROLE_KEYS

KEY_ARN = "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def as_dict(template: Template) -> dict[str, Any]:
    return json.loads(template.to_json())


def role_statements(doc: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [s for p in doc["Resources"][role]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_builders_return_troposphere_templates() -> None:
    assert isinstance(build_ecs(), Template)
    assert isinstance(build_lambda(StackConfig()), Template)


def test_stacks_import_nothing_from_the_runtime() -> None:
    """`s3sync.stacks` (and the render module) load without boto3 or the transfer engine."""
    code = (
        "import sys, s3sync.stacks, s3sync.render; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'functions', 'container') "
        "or m.startswith(('s3sync.transfer', 's3sync.local'))); print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_config_is_frozen_with_documented_defaults() -> None:
    cfg = StackConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_tasks = 3  # type: ignore[misc]
    assert (cfg.max_tasks, cfg.min_tasks, cfg.launch_type, cfg.ecs_stack_name) == (10, 1, "EC2", "ecsStack")
    with pytest.raises(TypeError):
        cfg.functions["splitter"] = cfg.functions["splitter"]  # type: ignore[index]


@pytest.mark.parametrize(
    "change",
    [
        {"min_tasks": 11},
        {"max_tasks": 0},
        {"part_size_mib": 4},
        {"launch_type": "LAMBDA"},
        {"dest_region": "us-east-1"},
        {"log_retention_days": 31},
        {"extra_statements": {"worker": []}},
        {"worker_stop_timeout_s": 121},
    ],
)
def test_config_refuses_values_cloudformation_would_reject(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid StackConfig"):
        StackConfig(**change)


def test_min_tasks_zero_is_allowed() -> None:
    doc = as_dict(build_lambda(StackConfig(min_tasks=0)))
    assert doc["Parameters"]["MinTasks"]["Default"] == 0


def test_allow_refuses_wildcard_actions() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        iam.allow([Action("s3", "*")], [iam.objects_arn("b")])
    with pytest.raises(ValueError, match="wildcard"):
        iam.allow([Action("s3", "Get*")], [iam.objects_arn("b")])


def test_allow_refuses_star_resource_unless_unscopable() -> None:
    with pytest.raises(ValueError, match="UNSCOPABLE"):
        iam.allow([s3.GetObject], ["*"])
    statement = iam.unscoped([Action("dynamodb", "ListStreams")])
    assert json.loads(statement.to_json())["Resource"] == ["*"]


def test_arns_use_the_partition() -> None:
    assert iam.arn("ecs", "cluster/x").to_dict() == {
        "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:cluster/x"
    }
    assert iam.bucket_arn("b").to_dict()["Fn::Sub"][0] == "arn:${AWS::Partition}:s3:::${Bucket}"


def test_fargate_default_changes_only_the_launch_type_default() -> None:
    ec2 = as_dict(build_ecs())
    fargate = as_dict(build_ecs(StackConfig(launch_type="FARGATE")))
    assert fargate["Parameters"]["LaunchType"]["Default"] == "FARGATE"
    ec2["Parameters"]["LaunchType"]["Default"] = "FARGATE"
    assert ec2 == fargate


def test_every_role_key_reaches_a_role() -> None:
    """An extra statement for each ROLE_KEYS entry lands in exactly one role of one stack."""
    marker = {
        key: iam.allow([kms.Decrypt], [Sub(KEY_ARN.replace("1234abcd", key.replace("_", "")))]) for key in ROLE_KEYS
    }
    cfg = StackConfig(extra_statements={k: [v] for k, v in marker.items()})
    text = render_all(cfg)["ecs.yaml"] + render_all(cfg)["lambda.yaml"]
    for key in ROLE_KEYS:
        assert text.count(f"key/{key.replace('_', '')}-") == 1, key


# --- customization: the example of docs/customizing.md, executed ------------------------------------------------------
class ShortRetentionEcs(EcsStack):
    """Override one step: keep part messages 4 days instead of 14."""

    def add_queue(self) -> None:
        super().add_queue()
        self.t.resources[Ids.QUEUE].MessageRetentionPeriod = 345600


def test_customize_default_policy_and_one_step() -> None:
    config = dataclasses.replace(
        StackConfig(),
        max_tasks=20,  # default of the MaxTasks parameter
        log_retention_days=90,  # fixed at render time
        extra_statements={"task": [iam.allow([kms.Decrypt], [Sub(KEY_ARN)])]},  # SSE-KMS source objects
    )
    texts = render_all(config, builders={"ecs": ShortRetentionEcs})
    ecs = json.loads(render(build_ecs(config, builder=ShortRetentionEcs), "json"))
    lam = json.loads(render(build_lambda(config), "json"))
    assert texts["ecs.yaml"] == render(build_ecs(config, builder=ShortRetentionEcs))

    # 1. a changed default
    assert lam["Parameters"]["MaxTasks"]["Default"] == 20
    assert {g["Properties"]["RetentionInDays"] for g in lam["Resources"].values()
            if g["Type"] == "AWS::Logs::LogGroup"} == {90}  # fmt: skip
    # 2. an added policy statement, after the built-in ones, in that role only
    task = role_statements(ecs, Ids.TASK_ROLE)
    assert task[-1] == {"Action": ["kms:Decrypt"], "Effect": "Allow", "Resource": [{"Fn::Sub": KEY_ARN}]}
    assert "kms:Decrypt" not in json.dumps(role_statements(ecs, Ids.EXECUTION_ROLE))
    # 3. one overridden step; the others untouched
    assert ecs["Resources"][Ids.QUEUE]["Properties"]["MessageRetentionPeriod"] == 345600
    assert ecs["Resources"][Ids.DLQ]["Properties"]["MessageRetentionPeriod"] == 1209600
    default = as_dict(build_ecs())
    assert default["Resources"][Ids.QUEUE]["Properties"]["MessageRetentionPeriod"] == 1209600
    assert set(default["Resources"]) == set(ecs["Resources"])


def test_a_step_can_be_dropped_or_added_through_steps() -> None:
    class NoBucketPolicy(LambdaStack):
        steps = tuple(s for s in LambdaStack.steps if s != "add_bucket_policy")

    doc = as_dict(build_lambda(builder=NoBucketPolicy))
    assert Ids.BUCKET_POLICY not in doc["Resources"] and Ids.BUCKET in doc["Resources"]


def test_a_misspelled_step_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="NoSuchStep.steps names no method: add_bucket_polcy"):
        class NoSuchStep(LambdaStack):
            steps = (*LambdaStack.steps, "add_bucket_polcy")


def test_render_all_refuses_unknown_stacks() -> None:
    with pytest.raises(ValueError, match="unknown stacks"):
        render_all(builders={"vpc": EcsStack})


@pytest.mark.system
def test_json_and_yaml_render_the_same_template() -> None:
    import cfn_flip

    texts = render_all(fmt="json")
    for stem in ("ecs", "lambda"):
        assert json.loads(texts[f"{stem}.json"]) == json.loads(cfn_flip.to_json(render_all()[f"{stem}.yaml"]))
