"""Shared test helpers: the bundled example objects and small object builders."""

from __future__ import annotations

import copy
import os
from typing import Any

from kubectl_kvbackup.sources import load_manifests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples", "demo")


def example_objects() -> list[dict[str, Any]]:
    """A fresh copy of every object in examples/demo (namespace demo)."""
    return copy.deepcopy(load_manifests([EXAMPLES], "demo"))


def obj(api_version: str, kind: str, name: str, namespace: str = "demo", **fields: Any) -> dict[str, Any]:
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta.update(fields.pop("metadata", {}))
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}
