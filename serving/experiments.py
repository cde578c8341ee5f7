"""Deterministic, hash-based assignment of users to experiment arms. Pure.

A user's arm is a function of ``(experiment salt, user id)`` only: SHA-256 of
``"<salt>:<user_id>"``, its first 8 bytes read as a fraction ``u`` in ``[0, 1)``, and the arm whose
cumulative weight interval holds ``u``. So the assignment is the same in every process, after
restarts and on every machine (Python's ``hash()`` is salted per process and is never used), and
changing the salt reshuffles users independently of the previous assignment.

Several experiments can run at once (each with its own salt, so assignments are independent);
the parameters they set must not overlap, so every parameter has one owner. The format is
documented in ``infra/experiments.example.yaml``.

Overrides (QA, demos): a request context key ``experiment.<name>`` = ``<arm>`` forces the arm;
an unknown experiment or arm is the caller's error (``SchemaError``, reason ``invalid_argument``).

Example::

    >>> experiments = Experiments.from_dict({"experiments": [{
    ...     "name": "ranker", "salt": "s1",
    ...     "arms": [{"name": "sasrec", "weight": 1, "params": {"ranker": "sasrec"}},
    ...              {"name": "popular", "weight": 1, "params": {"ranker": "popularity"}}]}]})
    >>> a = experiments.assign("user-42")
    >>> a == experiments.assign("user-42")
    True
    >>> experiments.assign("user-42", {"experiment.ranker": "popular"}).params.ranker
    'popularity'
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError, SchemaError
from serving.yaml_file import read_yaml

OVERRIDE_PREFIX = "experiment."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


RankerName = Literal["sasrec", "popularity"]  # popularity: retrieval order, no model
# What an arm ranks with: ``popularity``, ``sasrec`` (the promoted release's model) or
# ``sasrec@<model_version>`` (that registered model, loaded beside the release's; it ranks the
# candidates the release retrieved). See ``parse_ranker``.
RANKER_REF = r"^(popularity|sasrec(@[A-Za-z0-9_.:+-]+)?)$"
RankerRef = Annotated[str, Field(pattern=RANKER_REF)]


def parse_ranker(ref: str | None) -> tuple[RankerName | None, str | None]:
    """``"sasrec@v2"`` → ``("sasrec", "v2")``; ``"popularity"`` → ``("popularity", None)``."""
    if ref is None:
        return None, None
    name, _, version = ref.partition("@")
    if name not in ("sasrec", "popularity") or (name == "popularity" and version):
        raise ValueError(f"not a ranker: {ref!r} (popularity, sasrec or sasrec@<model_version>)")
    return name, version or None  # type: ignore[return-value]


# Parameters that choose the same thing, so one experiment owns both: an arm that interleaves
# two rankers chooses the ranker too.
_CHOOSES = {"interleave": "ranker"}


class ArmParams(_Strict):
    """What an arm changes in the pipeline; ``None`` means "the pipeline's default".

    ``ranker`` is a ranker reference (``RANKER_REF``): ``sasrec@<model_version>`` puts two
    trained models side by side in one server, e.g. the promoted one against a candidate.
    ``interleave: [A, B]`` serves a team-draft interleaving of two rankers (``serving.
    interleaving``) instead of one ``ranker``; each slot's team is in the response and the
    impression, so clicks credit the ranker that placed the item. An arm sets one of the two, and
    the experiment that sets either owns both.
    """

    ranker: RankerRef | None = None
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0)
    exploration_slots: int | None = Field(default=None, ge=0)
    interleave: tuple[RankerRef, RankerRef] | None = None

    def model_versions(self) -> set[str]:
        """The registered model versions this arm ranks with (``sasrec@<version>``)."""
        refs = [self.ranker, *(self.interleave or ())]
        return {version for _, version in map(parse_ranker, refs) if version}

    @model_validator(mode="after")
    def _two_different_rankers(self) -> ArmParams:
        if self.interleave is not None and self.interleave[0] == self.interleave[1]:
            raise ValueError(f"interleave needs two different rankers, got {self.interleave}")
        if self.interleave is not None and self.ranker is not None:
            raise ValueError("an arm sets either ranker or interleave, not both")
        return self

    def merged(self, other: ArmParams) -> ArmParams:
        """These parameters with ``other``'s set values on top."""
        return self.model_copy(update=other.model_dump(exclude_none=True))


class Arm(_Strict):
    name: str = Field(min_length=1)
    weight: float = Field(ge=0.0)
    params: ArmParams = ArmParams()


class Experiment(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str = Field(min_length=1)
    arms: tuple[Arm, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid_arms(self) -> Experiment:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if sum(arm.weight for arm in self.arms) <= 0:
            raise ValueError("arm weights must sum to more than 0")
        return self

    def bucket(self, user_id: str) -> float:
        """The user's stable position in ``[0, 1)`` for this experiment."""
        digest = hashlib.sha256(f"{self.salt}:{user_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def arm_for(self, user_id: str) -> Arm:
        total = sum(arm.weight for arm in self.arms)
        bounds = []
        running = 0.0
        for arm in self.arms:
            running += arm.weight
            bounds.append(running / total)
        index = bisect.bisect_right(bounds, self.bucket(user_id))
        if index >= len(self.arms):  # float rounding left the last bound a hair under u
            index = max(i for i, arm in enumerate(self.arms) if arm.weight > 0)
        return self.arms[index]  # a zero-weight arm has an empty interval: never chosen

    def arm_named(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        known = ", ".join(arm.name for arm in self.arms)
        raise SchemaError(
            f"experiment {self.name!r} has no arm {name!r} (arms: {known})",
            reason="invalid_argument",
        )


class ExperimentsFile(_Strict):
    version: int = Field(default=1, ge=1, le=1)
    experiments: tuple[Experiment, ...] = ()

    @model_validator(mode="after")
    def _one_owner_per_parameter(self) -> ExperimentsFile:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique, got {names}")
        owner: dict[str, str] = {}
        for experiment in self.experiments:
            for arm in experiment.arms:
                for name in arm.params.model_dump(exclude_none=True):
                    param = _CHOOSES.get(name, name)
                    if owner.setdefault(param, experiment.name) != experiment.name:
                        raise ValueError(
                            f"parameter {param!r} is set by both {owner[param]!r} and "
                            f"{experiment.name!r}"
                        )
        return self


@dataclass(frozen=True, slots=True)
class Assignment:
    """The arms a user is in, and the parameters they add up to."""

    arms: tuple[tuple[str, str], ...]  # (experiment, arm), in file order
    params: ArmParams

    @property
    def label(self) -> str:
        """For impressions and metrics: ``ranker=sasrec,diversity=control`` ("" with none)."""
        return ",".join(f"{experiment}={arm}" for experiment, arm in self.arms)


class Experiments:
    """The loaded experiment configuration; ``assign`` is all the pipeline needs."""

    def __init__(self, spec: ExperimentsFile | None = None) -> None:
        self.spec = spec or ExperimentsFile()
        self._by_name = {e.name: e for e in self.spec.experiments}

    @classmethod
    def load(cls, path: str | Path) -> Experiments:
        return cls.from_dict(read_yaml(path, "experiments"), origin=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "experiments") -> Experiments:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: the top level must be a mapping")
        try:
            return cls(ExperimentsFile.model_validate(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"{origin}: {problems}") from exc

    def model_versions(self) -> frozenset[str]:
        """Every registered model version an arm ranks with: the server loads them at start."""
        return frozenset(
            version
            for experiment in self.spec.experiments
            for arm in experiment.arms
            for version in arm.params.model_versions()
        )

    def assign(self, user_id: str, context: Mapping[str, str] | None = None) -> Assignment:
        """The user's arm in every experiment; ``context`` may force arms (module docstring)."""
        overrides = overrides_from_context(context or {})
        unknown = sorted(set(overrides) - set(self._by_name))
        if unknown:
            raise SchemaError(f"unknown experiment(s) {unknown}", reason="invalid_argument")
        arms: list[tuple[str, str]] = []
        params = ArmParams()
        for experiment in self.spec.experiments:
            forced = overrides.get(experiment.name)
            arm = experiment.arm_named(forced) if forced else experiment.arm_for(user_id)
            arms.append((experiment.name, arm.name))
            params = params.merged(arm.params)
        return Assignment(tuple(arms), params)


def overrides_from_context(context: Mapping[str, str]) -> dict[str, str]:
    """``{"experiment.ranker": "popular"}`` → ``{"ranker": "popular"}``; other keys ignored."""
    return {
        key[len(OVERRIDE_PREFIX) :]: value
        for key, value in context.items()
        if key.startswith(OVERRIDE_PREFIX)
    }
