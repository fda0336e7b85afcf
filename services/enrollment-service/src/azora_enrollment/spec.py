"""The ``EnrollmentCohort`` spec (docs/briefs/contracts.md) and its semantic checks."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
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

# The CRD's grammar and bounds (crds/enrollmentcohorts.azora.io.yaml), enforced here too for
# whoever configures the service without Kubernetes: at most 5 digits before the point (so a
# value can never overflow ``timedelta``), s/m/h only, 32 characters at most.
DURATION_PATTERN = r"^([0-9]{1,5}(\.[0-9]{1,9})?(s|m|h))+$"
DURATION_MAX_LENGTH = 32
CLAIM_WINDOW_MIN = timedelta(minutes=1)
CLAIM_WINDOW_MAX = timedelta(hours=720)
REFUND_WINDOW_MAX = timedelta(hours=8760)
_STRICT_DURATION = re.compile(DURATION_PATTERN)
# What earlier releases accepted (and may be stored): any number of digits, also ``ms``.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001")}
# timedelta's own limit (999,999,999 days): the bound that turns an overflow into a refusal.
_LENIENT_MAX = timedelta(days=999_999_999)


def parse_duration(text: str) -> timedelta:
    """A Go-style duration (``90s``, ``30m``, ``48h``, ``1h30m``), parsed exactly (``Decimal``).

    Lenient about the grammar (a stored spec of an earlier release may say ``500ms`` or have
    more digits than the CRD allows) but never raises anything but ``ValueError``: the value is
    bounded before it becomes a ``timedelta``, so an absurd size is a refusal, not an overflow.
    """
    pos = 0
    total = Decimal(0)
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{text[:40]}' is not a duration like 90s, 30m, 48h or 1h30m")
    if total > Decimal(int(_LENIENT_MAX.total_seconds())):
        raise ValueError(f"'{text[:40]}' is longer than {_LENIENT_MAX.days} days")
    return timedelta(microseconds=int(total * 1_000_000))


def check_duration(
    text: str, *, minimum: timedelta, maximum: timedelta, stored: bool = False
) -> timedelta:
    """A window as the CRD states it: its grammar, then ``minimum <= value <= maximum``.

    ``stored``: a spec this service accepted before (``spec_of``): only parsed, never refused
    again for a rule added since.
    """
    if stored:
        return parse_duration(text)
    if len(text) > DURATION_MAX_LENGTH or not _STRICT_DURATION.fullmatch(text):
        raise ValueError(
            f"'{text[:40]}' is not a duration like 90s, 30m, 48h or 1h30m "
            f"(numbers of at most 5 digits, units s, m, h, at most {DURATION_MAX_LENGTH} "
            "characters)"
        )
    value = parse_duration(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"'{text}' is outside the allowed range {_go(minimum)} to {_go(maximum)}")
    return value


def _go(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


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
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        check_duration(
            value, minimum=CLAIM_WINDOW_MIN, maximum=CLAIM_WINDOW_MAX, stored=_stored(info)
        )
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
    def _duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_duration(
                value, minimum=timedelta(0), maximum=REFUND_WINDOW_MAX, stored=_stored(info)
            )
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
    for i, prerequisite in enumerate(spec.eligibility.prerequisites):
        field = f"spec.eligibility.prerequisites[{i}]"
        if not re.match(COHORT_KEY_PATTERN, prerequisite):
            raise _field_refusal(
                "InvalidPrerequisite", field, f"'{prerequisite}' is not 'namespace/name'"
            )
        if prerequisite == own_key:
            # Nobody could ever enroll: completing this cohort would need a seat in it first.
            raise _field_refusal(
                "SelfPrerequisite", field, f"cohort {own_key} cannot be its own prerequisite"
            )
    segments = [rule.segment for rule in spec.waitlist.priority_rules]
    if len(set(segments)) != len(segments):
        raise InvalidSpec(
            "DuplicatePriorityRule", "waitlist.priorityRules names a segment more than once"
        )
    return spec


def _field_refusal(reason: str, field: str, message: str) -> InvalidSpec:
    return InvalidSpec(
        reason, f"{field}: {message}", field=field, errors=[{"field": field, "reason": message}]
    )


_spec_cache: dict[tuple[int, int], CohortSpec] = {}


def spec_of(cohort: CohortRow) -> CohortSpec:
    """A stored cohort's parsed spec; cached per (cohort, revision): a revision never changes."""
    key = (cohort.id, cohort.revision)
    spec = _spec_cache.get(key)
    if spec is None:
        if len(_spec_cache) > 10_000:
            _spec_cache.clear()
        # Stored specs passed the checks of the release that stored them; later, stricter
        # bounds refuse new PUTs but never make a stored cohort unreadable.
        spec = CohortSpec.model_validate(cohort.spec, context={"stored": True})
        _spec_cache[key] = spec
    return spec
