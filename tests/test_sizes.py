"""Impossible worker sizes are refused: ecs.yaml's Rules (checked by CloudFormation at create and update, console
included) and `s3sync deploy`'s check agree on every combination, and deploy also refuses part buffers that do not
fit the task's memory. The deploy side, through the CLI, is in tests/test_deploy.py."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import cfn_flip
import pytest

from s3sync.stacks import StackConfig, sizes
from s3sync.stacks.config import LAUNCH_TYPES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ecs() -> dict[str, Any]:
    return json.loads(cfn_flip.to_json((ROOT / "templates" / "ecs.yaml").read_text(encoding="utf-8")))


def rule_value(node: Any, params: dict[str, str]) -> Any:
    """The rule-specific intrinsic functions the template uses, evaluated as CloudFormation does."""
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Fn::Equals":
            a, b = (rule_value(x, params) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Contains":  # "true if a specified string matches at least one value in a list of strings"
            values, value = arg
            return str(rule_value(value, params)) in [str(v) for v in values]
        if fn == "Fn::Not":
            return not rule_value(arg[0], params)
        if fn == "Fn::And":
            return all(rule_value(x, params) for x in arg)
        if fn == "Fn::Or":
            return any(rule_value(x, params) for x in arg)
        raise AssertionError(f"rule function {fn} not modelled")
    return node


def failed_assertions(doc: dict[str, Any], params: dict[str, str]) -> list[str]:
    """The assertions that fail for `params`, every other parameter at its default (as a launch that leaves it)."""
    params = {**{k: str(v.get("Default", "")) for k, v in doc["Parameters"].items()}, **params}
    out = []
    for rule in doc.get("Rules", {}).values():
        if "RuleCondition" in rule and not rule_value(rule["RuleCondition"], params):
            continue
        out += [a["AssertDescription"] for a in rule["Assertions"] if not rule_value(a["Assert"], params)]
    return out


def test_the_parameters_allow_exactly_the_tables(ecs: dict[str, Any]) -> None:
    p = ecs["Parameters"]
    assert p["TaskCpu"]["AllowedValues"] == [str(v) for v in sizes.TASK_CPU_VALUES]
    assert p["TaskMemory"]["AllowedValues"] == [str(v) for v in sizes.TASK_MEMORY_VALUES]
    assert p["InstanceType"]["AllowedValues"] == list(sizes.INSTANCE_TYPES)


def test_rules_and_the_deploy_check_agree_on_every_combination(ecs: dict[str, Any]) -> None:
    """Every LaunchType x TaskCpu x TaskMemory x InstanceType the parameters allow: the template's Rules refuse
    exactly what sizes.problems() refuses (9,000 combinations or so)."""
    p = ecs["Parameters"]
    grid = itertools.product(p["LaunchType"]["AllowedValues"], p["TaskCpu"]["AllowedValues"],
                             p["TaskMemory"]["AllowedValues"], p["InstanceType"]["AllowedValues"])  # fmt: skip
    refused = 0
    for launch, cpu, memory, instance in grid:
        params = {"LaunchType": launch, "TaskCpu": cpu, "TaskMemory": memory, "InstanceType": instance}
        by_rules = failed_assertions(ecs, params)
        by_check = list(sizes.problems(launch_type=launch, task_cpu=int(cpu), task_memory=int(memory),
                                       instance_type=instance))  # fmt: skip
        assert bool(by_rules) == bool(by_check), (params, by_rules, by_check)
        refused += bool(by_rules)
    assert refused > 1000  # the grid does exercise the refusals


@pytest.mark.parametrize(
    ("params", "refused", "named"),
    [
        ({"LaunchType": "FARGATE", "TaskCpu": "256", "TaskMemory": "4096"}, True, ("TaskCpu 256", "TaskMemory")),
        ({"LaunchType": "FARGATE", "TaskCpu": "1024", "TaskMemory": "2048"}, False, ()),
        ({"LaunchType": "FARGATE", "TaskCpu": "16384", "TaskMemory": "36864"}, True, ("TaskCpu 16384",)),
        ({"LaunchType": "FARGATE", "TaskCpu": "16384", "TaskMemory": "40960"}, False, ()),
        ({"LaunchType": "EC2", "InstanceType": "c5.large", "TaskCpu": "1024", "TaskMemory": "4096"}, True,
         ("InstanceType", "c5.large", "TaskMemory")),
        ({"LaunchType": "EC2", "InstanceType": "c5.large", "TaskCpu": "4096", "TaskMemory": "2048"}, True,
         ("InstanceType", "c5.large", "TaskCpu")),
        ({"LaunchType": "EC2", "InstanceType": "c5.large", "TaskCpu": "2048", "TaskMemory": "3072"}, False, ()),
        # on EC2 the Fargate pairs do not apply: 256 CPU units with 4 GiB is fine on an m5.large
        ({"LaunchType": "EC2", "InstanceType": "m5.large", "TaskCpu": "256", "TaskMemory": "4096"}, False, ()),
    ],
)
def test_known_sizes(ecs: dict[str, Any], params: dict[str, str], refused: bool, named: tuple[str, ...]) -> None:
    params = {"InstanceType": "c5.large", **params}
    failed = failed_assertions(ecs, params)
    assert bool(failed) == refused, failed
    for text in named:
        assert any(text in description for description in failed), (text, failed)


def test_every_assertion_names_the_parameters_it_checks(ecs: dict[str, Any]) -> None:
    for name, rule in ecs["Rules"].items():
        for assertion in rule["Assertions"]:
            checked = {n["Ref"] for n in _walk(assertion["Assert"]) if isinstance(n, dict) and "Ref" in n}
            conditioned = {n["Ref"] for n in _walk(rule["RuleCondition"]) if isinstance(n, dict) and "Ref" in n}
            for parameter in checked | (conditioned - {"LaunchType"}):
                assert parameter in assertion["AssertDescription"], (name, parameter)


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_part_buffers_must_fit_the_task() -> None:
    """What no Rule can check (PartSizeMiB is lambda.yaml's, and Rules do not multiply): deploy's check."""
    ok = dict(launch_type="FARGATE", task_cpu=1024, task_memory=2048)
    assert not list(sizes.problems(**ok, worker_threads=4, part_size_mib=16))  # the defaults: 336 MiB
    [problem] = sizes.problems(**ok, worker_threads=32, part_size_mib=64)  # 2816 MiB
    assert "WorkerThreads 32" in problem and "PartSizeMiB 64" in problem and "TaskMemory 2048" in problem
    assert sizes.worker_memory_mib(4, 16) == 4 * 16 * 1.25 + sizes.WORKER_BASE_MIB


def test_fargate_table_is_the_documented_one() -> None:
    t = sizes.FARGATE_MEMORY
    assert t[256] == (512, 1024, 2048) and t[512] == (1024, 2048, 3072, 4096)
    assert (t[1024][0], t[1024][-1], len(t[1024])) == (2048, 8192, 7)
    assert (t[2048][0], t[2048][-1], len(t[2048])) == (4096, 16384, 13)
    assert (t[4096][0], t[4096][-1], len(t[4096])) == (8192, 30720, 23)
    assert (t[8192][0], t[8192][-1], t[8192][1] - t[8192][0]) == (16384, 61440, 4096)
    assert (t[16384][0], t[16384][-1], t[16384][1] - t[16384][0]) == (32768, 122880, 8192)


def test_ec2_instances_leave_room_for_the_agent() -> None:
    # an m4.large (8 GiB) registers 7985 MiB (ECS docs); 95% of 8192 is 7782: the largest TaskMemory is 7168
    assert sizes.ec2_memory_mib("m5.large") == 7782
    assert max(m for m in sizes.TASK_MEMORY_VALUES if m <= sizes.ec2_memory_mib("m5.large")) == 7168
    assert sizes.ec2_cpu_units("c5.large") == 2048


@pytest.mark.parametrize(
    "change",
    [
        {"launch_type": "FARGATE", "task_cpu": 256, "task_memory_mib": 4096},
        {"instance_type": "c5.large", "task_memory_mib": 4096},
        {"task_memory_mib": 2000},
        {"instance_type": "t2.nano"},
        {"worker_threads": 64, "part_size_mib": 64},
    ],
)
def test_config_refuses_defaults_the_stacks_would_refuse(change: dict[str, Any]) -> None:
    assert all(lt in LAUNCH_TYPES for lt in ("EC2", "FARGATE"))
    with pytest.raises(ValueError, match="invalid StackConfig"):
        dataclasses.replace(StackConfig(), **change)
