from __future__ import annotations

from typing import Iterator

import pytest

from .fakeapi import FakeKubeAPI


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    """A fake Kubernetes API server on 127.0.0.1, stopped after the test."""
    with FakeKubeAPI() as api:
        yield api


@pytest.fixture
def kubeconfig(fake_api: FakeKubeAPI, tmp_path) -> str:
    """A kubeconfig for the fake server as its admin, current namespace ``default``."""
    return fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"))
