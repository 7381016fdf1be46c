"""What an environment is built from (`Spec`), what was resolved (`Resolution`), what a page
shows (`EnvironmentState`), and how an install fails (`EnvironmentFailed`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ready", "building", "failed"]


def digest(value: Any) -> str:
    """A short stable name for a JSON-able value (file and folder names under envs/)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Spec:
    """Everything that decides which packages a script gets.

    `requirements` are PEP 508 strings in a canonical form, sorted, without duplicates;
    `python` names the interpreter scripts run with (version, platform, executable), so an
    upgraded Python gets environments of its own."""

    requirements: tuple[str, ...]
    requires_python: str | None
    index: str | None
    python: str

    @property
    def empty(self) -> bool:
        return not self.requirements

    @property
    def digest(self) -> str:
        return digest(["spec", list(self.requirements), self.index, self.python])


@dataclass(frozen=True)
class Resolution:
    """A spec resolved by uv: the pinned set (`name==version` lines) and its environment key."""

    pinned: tuple[str, ...]
    key: str
    log: str = ""

    @property
    def packages(self) -> list[dict[str, str]]:
        return packages_of(self.pinned)


def env_key(pinned: tuple[str, ...], spec: Spec, hook: str) -> str:
    """The environment's name: the pinned set on this interpreter from this index, with this
    version of the ordered-output hook in it."""
    return digest(["env", list(pinned), spec.index, spec.python, hook])


def packages_of(pinned: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    found = []
    for line in pinned:
        name, sep, version = line.partition("==")
        if sep:
            found.append({"name": name.strip(), "version": version.split(";")[0].strip()})
    return found


@dataclass
class EnvironmentState:
    """`GET /api/v1/scripts/{id}/environment` and the script page's section."""

    status: Status
    packages: list[dict[str, str]] = field(default_factory=list)
    log: str = ""
    requirements: list[str] = field(default_factory=list)
    python: str = ""
    built_at: str | None = None
    # Why it failed, as a runs.messages code and its parameters (the overlay translates it).
    failure: tuple[str, dict[str, Any]] | None = None


class EnvironmentFailed(RuntimeError):
    """A script's environment cannot be made; `code` and `params` are a runs.messages code.

    `log` is what the installer said (kept with the environment and shown with the run)."""

    def __init__(self, code: str, params: dict[str, Any], log: str = "") -> None:
        super().__init__(f"{code}: {params}")
        self.code = code
        self.params = params
        self.log = log


class WaitCancelled(RuntimeError):
    """The run was cancelled while it waited for its environment."""
