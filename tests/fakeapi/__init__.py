"""A fake Kubernetes API server on loopback, for tests and benchmarks: use it through the real client."""

from .admission import Call as AdmissionCall
from .kubevirt import FreezeCall
from .server import ADMIN, FakeKubeAPI, Request
from .status import ApiStatus
from .types import DEFAULT_TYPES, ResourceType

__all__ = ["ADMIN", "AdmissionCall", "ApiStatus", "DEFAULT_TYPES", "FakeKubeAPI", "FreezeCall", "Request",
           "ResourceType"]
