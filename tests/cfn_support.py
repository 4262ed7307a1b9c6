"""Shared by the tests that create the rendered stacks in moto's CloudFormation (tests/test_templates.py,
tests/test_ops_stacks.py): the VPC, subnet and code bucket the stacks need, and the secret's ARN pinned."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

SECRET_REF = "Value:\n      Ref: DestCredentials\n"


def pin_secret(ecs_text: str) -> str:
    """moto's CloudFormation has no AWS::SecretsManager::Secret: the ECS stack's secret ARN output becomes a literal."""
    assert ecs_text.count(SECRET_REF) == 1
    return ecs_text.replace(SECRET_REF, "Value: arn:aws:secretsmanager:us-east-1:123456789012:secret:x\n")


def params(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


@contextlib.contextmanager
def moto_cloudformation(launch_type: str = "FARGATE") -> Iterator[tuple[Any, dict[str, str]]]:
    """Inside `mock_aws`: a VPC with a subnet and the code bucket with a function zip; yields the CloudFormation
    client and the ECS stack's parameters."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="code-bucket")
        s3.put_object(Bucket="code-bucket", Key="fn.zip", Body=b"PK\x05\x06" + b"\0" * 18)
        yield boto3.client("cloudformation", region_name="us-east-1"), {
            "ImageUri": "worker:1", "DestBucket": "dest-bucket", "DestAccessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "DestSecretAccessKey": "s" * 40, "VpcId": vpc, "SubnetId": subnet, "LaunchType": launch_type}
