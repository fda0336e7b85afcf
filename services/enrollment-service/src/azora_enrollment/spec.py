"""The ``EnrollmentCohort`` spec (docs/briefs/contracts.md) and its semantic checks."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from azora_enrollment.errors import InvalidSpec

if TYPE_CHECKING:
    from azora_enrollment.repository import CohortRow

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
COHORT_KEY_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
# Students whose segment has no priority rule queue after every ruled segment.
UNRULED_PRIORITY = 1_000_000

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """Go-style duration (``90s``, ``30m``, ``48h``, ``1h30m``, ``500ms``); positive only."""
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"'{text}' is not a positive duration like 90s, 30m, 48h or 1h30m")
    return timedelta(seconds=total)


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class PriorityRule(_Spec):
    segment: Text
    priority: int = Field(ge=0, le=UNRULED_PRIORITY - 1)


class Eligibility(_Spec):
    segments: list[Text] = Field(default_factory=list, max_length=100)
    prerequisites: list[Text] = Field(default_factory=list, max_length=50)


class WaitlistSpec(_Spec):
    enabled: bool = False
    capacity: int | None = Field(default=None, ge=0)
    mode: Literal["autoEnroll", "offer"] = "autoEnroll"
    claim_window: str = Field(default="48h", max_length=50)
    ordering: Literal["fifo", "priority"] = "fifo"
    priority_rules: list[PriorityRule] = Field(default_factory=list, max_length=100)
    position_visible: bool = True

    @field_validator("claim_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def claim_window_delta(self) -> timedelta:
        return parse_duration(self.claim_window)

    def priorities(self) -> tuple[dict[str, int], int]:
        """Priority by segment, and the priority of every other segment (lower goes first)."""
        if self.ordering != "priority":
            return {}, 0
        return {r.segment: r.priority for r in self.priority_rules}, UNRULED_PRIORITY


class PricingSpec(_Spec):
    product: Text
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class CohortSpec(_Spec):
    course: Text
    title: str = Field(min_length=1, max_length=500, pattern=NO_NUL)
    capacity: int | None = Field(default=None, ge=0, le=10_000_000)
    opens_at: AwareDatetime | None = None
    closes_at: AwareDatetime | None = None
    eligibility: Eligibility = Field(default_factory=Eligibility)
    waitlist: WaitlistSpec = Field(default_factory=WaitlistSpec)
    pricing: PricingSpec | None = None
    refund_window: str | None = Field(default=None, max_length=50)

    @field_validator("refund_window")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def refund_window_delta(self) -> timedelta | None:
        return parse_duration(self.refund_window) if self.refund_window else None

    def window_open(self, now: datetime) -> bool:
        # Half-open window: the opening instant is inside, the closing instant is not.
        if self.opens_at is not None and now < self.opens_at:
            return False
        return not (self.closes_at is not None and now >= self.closes_at)


def _camel_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + to_camel(str(part))
    return out or "spec"


def _reason_for(error_type: str, field: str) -> str:
    if "Window" in field or field.endswith("claimWindow") or field.endswith("refundWindow"):
        return "InvalidDuration"
    return {
        "extra_forbidden": "UnknownField",
        "missing": "MissingField",
    }.get(error_type, "InvalidSpec")


def parse_spec(raw: dict[str, Any], *, namespace: str, name: str) -> CohortSpec:
    """Validate a spec; any refusal is a 422 ``invalid-spec`` problem with a CamelCase reason."""
    try:
        spec = CohortSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"field": "spec." + _camel_path(tuple(e["loc"])), "reason": e["msg"]}
            for e in exc.errors()
        ]
        first = exc.errors()[0]
        reason = _reason_for(first["type"], _camel_path(tuple(first["loc"])))
        raise InvalidSpec(
            reason, "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]), errors=errors
        ) from None
    if spec.opens_at and spec.closes_at and spec.closes_at <= spec.opens_at:
        raise InvalidSpec(
            "WindowInverted",
            f"closesAt ({spec.closes_at.isoformat()}) must be after opensAt "
            f"({spec.opens_at.isoformat()})",
        )
    own_key = f"{namespace}/{name}"
    for prerequisite in spec.eligibility.prerequisites:
        if not re.match(COHORT_KEY_PATTERN, prerequisite):
            raise InvalidSpec(
                "InvalidPrerequisite", f"prerequisite '{prerequisite}' is not 'namespace/name'"
            )
        if prerequisite == own_key:
            raise InvalidSpec("InvalidPrerequisite", "a cohort cannot be its own prerequisite")
    segments = [rule.segment for rule in spec.waitlist.priority_rules]
    if len(set(segments)) != len(segments):
        raise InvalidSpec(
            "DuplicatePriorityRule", "waitlist.priorityRules names a segment more than once"
        )
    return spec


_spec_cache: dict[tuple[int, int], CohortSpec] = {}


def spec_of(cohort: CohortRow) -> CohortSpec:
    """A stored cohort's parsed spec; cached per (cohort, revision): a revision never changes."""
    key = (cohort.id, cohort.revision)
    spec = _spec_cache.get(key)
    if spec is None:
        if len(_spec_cache) > 10_000:
            _spec_cache.clear()
        spec = CohortSpec.model_validate(cohort.spec)
        _spec_cache[key] = spec
    return spec
