"""Pure CloudFormation builders for the two s3sync stacks (troposphere + awacs); nothing here calls AWS.

    from s3sync.stacks import StackConfig, build_ecs, build_lambda, render_all
    texts = render_all(StackConfig())          # {"ecs.yaml": "...", "lambda.yaml": "..."}

Customize with a config (`dataclasses.replace(StackConfig(), max_tasks=20)`), extra IAM statements per role
(`StackConfig(extra_statements={"task": [...]})`), or a subclass overriding one `add_*` step
(`build_ecs(cfg, builder=MyEcsStack)`).
"""

from __future__ import annotations

from collections.abc import Mapping

from s3sync.stacks.common import FORMATS, Exports, Ids, StackBuilder, render
from s3sync.stacks.config import FunctionSettings, StackConfig
from s3sync.stacks.ecs import EcsStack, build_ecs
from s3sync.stacks.lambda_ import LambdaStack, build_lambda

#: Stack file stem -> builder class, in deployment order (ecs first: lambda imports its exports).
STACKS: Mapping[str, type[StackBuilder]] = {"ecs": EcsStack, "lambda": LambdaStack}


def render_all(
    config: StackConfig | None = None,
    fmt: str = "yaml",
    builders: Mapping[str, type[StackBuilder]] | None = None,
) -> dict[str, str]:
    """File name -> deterministic template text, for both stacks in deployment order.

    `builders` replaces the builder class of a stack by stem, e.g. `{"ecs": MyEcsStack}`.
    """
    chosen = {**STACKS, **(builders or {})}
    unknown = sorted(set(chosen) - set(STACKS))
    if unknown:
        raise ValueError(f"unknown stacks {unknown}; known: {list(STACKS)}")
    return {f"{stem}.{fmt}": render(cls(config).build(), fmt) for stem, cls in chosen.items()}


__all__ = [
    "FORMATS",
    "STACKS",
    "EcsStack",
    "Exports",
    "FunctionSettings",
    "Ids",
    "LambdaStack",
    "StackBuilder",
    "StackConfig",
    "build_ecs",
    "build_lambda",
    "render",
    "render_all",
]
