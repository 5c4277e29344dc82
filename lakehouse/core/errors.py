"""The error taxonomy: one base class, one subclass per kind of failure a user must act on."""

from __future__ import annotations


class LakehouseError(Exception):
    """Base class of every error the platform raises on purpose."""


class ContractError(LakehouseError):
    """A contract file is invalid; the message names the file and the field."""

    def __init__(self, path: object, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: field `{field}`: {problem}")


class ConfigError(LakehouseError):
    """A setting (environment variable, resource config) is missing or invalid."""


class LandingFileError(LakehouseError):
    """A landing file cannot be read at all; it is recorded as rejected, never half-loaded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"landing file `{path}`: {reason}")


class BatchBlockedError(LakehouseError):
    """A blocking batch rule failed: the batch was not published."""
