"""The errors the CLI shows as they are, in a module of their own: usage errors are raised where no cluster is used,
so the parser and TAB completion need these without loading the cluster adapter."""

from __future__ import annotations

from typing import Any


class KubeError(Exception):
    """An error to show the user as is: one line, kubectl's wording where kubectl has one."""

    exit_code = 1


class ApiError(KubeError):
    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None):
        self.status, self.reason, self.body = status, reason, body or {}
        super().__init__(f"Error from server ({reason}): {message}" if reason else f"Error from server: {message}")
