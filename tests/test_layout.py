"""The codebase's layering, read from the import statements of every module (ast; nothing imported):

- what ships to Lambda (the zip's LAMBDA_SOURCES) and to the worker image (its Dockerfile's COPY lines) imports
  nothing of s3sync outside itself: anything else is not there at run time, an ImportError no local run would show;
- the stacks never import the runtime (transfer, local, ops) or the CLI; nothing but the CLI imports the CLI;
- no module imports another module's private (`_name`) names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3sync.package.image_context import DOCKERFILE, dockerfile_sources
from s3sync.package.lambda_zip import LAMBDA_SOURCES
from s3sync.package.sources import source_files, source_root

ROOT = source_root()
OURS = ("s3sync", "functions", "container")


def modules() -> list[Path]:
    return sorted(p for top in OURS for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import statement, at any depth (lazy ones too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [a.name for a in node.names], node.lineno


def ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def shipped(files: list[str]) -> set[str]:
    return {module_name(ROOT / f) for f in files if f.endswith(".py")}


#: Imports of what does not ship, each only on a path that never runs where it is missing.
NOT_SHIPPED_ON_PURPOSE = {
    # only when LOCAL_ROLE_POLICY is set: by `s3sync local` for its host workers and in-process functions (where
    # s3sync.local is installed), never in AWS or in a container of the image (docs/local.md says so)
    ("s3sync/transfer/runtime.py", "s3sync.local.iam"),
}


def lambda_modules() -> set[str]:
    return shipped([name for rel in LAMBDA_SOURCES for name, _ in source_files(ROOT, rel)])


def image_modules() -> set[str]:
    text = (ROOT / DOCKERFILE).read_text(encoding="utf-8")
    paths = [p for p in dockerfile_sources(text) if (ROOT / p).exists()]
    return shipped([name for rel in paths for name, _ in source_files(ROOT, rel)])


@pytest.mark.parametrize("what, shipped_modules", [("the Lambda zip", lambda_modules),
                                                   ("the worker image", image_modules)])
def test_what_ships_imports_only_what_ships_with_it(what, shipped_modules) -> None:
    have = shipped_modules()
    assert {"functions.splitter", "s3sync.transfer.worker"} & have  # the sets are read, not empty
    missing = []
    for path in modules():
        if module_name(path) not in have:
            continue
        for target, names, line in imports(path):
            if not ours(target):
                continue
            # `from pkg import mod` may name a submodule
            if (str(path.relative_to(ROOT)), target) in NOT_SHIPPED_ON_PURPOSE:
                continue
            if target not in have and not all(f"{target}.{n}" in have for n in names):
                missing.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not missing, f"not in {what}: " + "; ".join(missing)


def test_the_stacks_never_import_the_runtime_or_the_cli() -> None:
    wrong = [f"{p.relative_to(ROOT)}:{line} imports {target}"
             for p in modules() if module_name(p).startswith("s3sync.stacks")
             for target, _, line in imports(p)
             if target.startswith(("s3sync.transfer", "s3sync.local", "s3sync.ops", "s3sync.cli", "functions",
                                   "container"))]
    assert not wrong


def test_only_the_cli_imports_the_cli() -> None:
    wrong = [f"{p.relative_to(ROOT)}:{line}" for p in modules() if not module_name(p).startswith("s3sync.cli")
             for target, _, line in imports(p) if target.startswith("s3sync.cli")]
    assert not wrong


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = [f"{p.relative_to(ROOT)}:{line} takes {n} from {target}"
             for p in modules() for target, names, line in imports(p) if ours(target)
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert not wrong
