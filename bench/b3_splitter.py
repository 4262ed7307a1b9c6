from __future__ import annotations
import argparse
from typing import Any
def add_arguments(p: argparse.ArgumentParser) -> None:
    pass
def run(args: argparse.Namespace) -> dict[str, Any]:
    return {"summary": {}}
