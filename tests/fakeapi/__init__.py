"""A fake Kubernetes API server on loopback, for tests and benchmarks: use it through the real client."""

from .server import ADMIN, ApiStatus, FakeKubeAPI, FreezeCall, Request
from .types import DEFAULT_TYPES, ResourceType

__all__ = ["ADMIN", "ApiStatus", "DEFAULT_TYPES", "FakeKubeAPI", "FreezeCall", "Request", "ResourceType"]
