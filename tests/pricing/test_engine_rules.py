"""Rule semantics with exact amounts: order, stacking, best deal, caps, allocation, shadow."""

from __future__ import annotations

from decimal import Decimal

import pytest

from azora_pricing.engine import CombinationMode, QuoteInputError
from azora_pricing.engine.trace import result_document
from tests.pricing.helpers import adjustments, product, quote, rule, single, snapshot

PCT10 = {"percentOff": "10"}


def test_rules_apply_in_priority_order_on_the_running_amount() -> None:
    a = rule("pct", {"priority": 10, "action": PCT10})
    b = rule("off", {"priority": 20, "action": {"amountOff": {"amount": 100, "currency": "EUR"}}})
    assert single(1000, a, b).total == 800  # 1000 -> 900 -> 800
    a2 = rule("pct", {"priority": 30, "action": PCT10})
    assert single(1000, a2, b).total == 810  # 1000 -> 900 -> 810
    assert adjustments(single(1000, a2, b)) == [("off", -100), ("pct", -90)]


def test_equal_priority_ties_break_by_namespace_then_name() -> None:
    fixed = rule("zz", {"action": {"fixedPrice": {"amount": 500, "currency": "EUR"}}})
    pct = rule("aa", {"action": {"percentOff": "50"}})
    other_ns = rule("aa", {"action": {"multiplier": "2"}}, namespace="b")
    # default/aa (50% off) -> default/zz (fixed 500) -> ... b/aa sorts before default/*.
    result = single(1000, fixed, pct, other_ns)
    assert [a.rule.key for a in result.lines[0].adjustments] == ["b/aa", "default/aa", "default/zz"]
    assert result.total == 500


def test_exclusive_rule_is_the_only_one_applied() -> None:
    rules = [
        rule("stack", {"priority": 10, "action": PCT10}),
        rule("ex1", {"priority": 20, "stacking": "exclusive", "action": {"percentOff": "20"}}),
        rule("ex2", {"priority": 30, "stacking": "exclusive", "action": {"percentOff": "50"}}),
    ]
    result = single(1000, *rules)
    assert adjustments(result) == [("ex1", -200)]
    assert result.total == 800


def test_stop_after_ends_the_chain() -> None:
    rules = [
        rule("first", {"priority": 10, "action": PCT10}),
        rule("stop", {"priority": 20, "stacking": "stopAfter", "action": PCT10}),
        rule("never", {"priority": 30, "action": {"percentOff": "50"}}),
    ]
    result = single(1000, *rules)
    assert adjustments(result) == [("first", -100), ("stop", -90)]
    assert result.total == 810


def test_best_deal_picks_the_largest_saving_after_surcharges() -> None:
    rules = [
        rule("pct", {"action": PCT10}),
        rule("off", {"action": {"amountOff": {"amount": 150, "currency": "EUR"}}}),
        rule("fixed", {"action": {"fixedPrice": {"amount": 880, "currency": "EUR"}}}),
    ]
    best = single(1000, *rules, mode=CombinationMode.BEST_DEAL)
    assert adjustments(best) == [("off", -150)]
    assert best.total == 850
    stacked = single(1000, *rules)  # same priority, by name: fixed 880 -> off 730 -> pct 657
    assert stacked.total == 657
    surcharge = rule("peak", {"priority": 1, "action": {"multiplier": "1.1"}})
    best = single(1000, surcharge, *rules, mode=CombinationMode.BEST_DEAL)
    # 1000 * 1.1 = 1100; savings: 10% = 110, 150 off = 150, fixed 880 = 220 -> fixed wins.
    assert adjustments(best) == [("peak", 100), ("fixed", -220)]
    assert best.total == 880


def test_max_discount_caps_a_rule_on_the_line() -> None:
    capped = rule(
        "half",
        {
            "action": {"percentOff": "50"},
            "caps": {"maxDiscount": {"amount": 200, "currency": "EUR"}},
        },
    )
    result = single(1000, capped)
    assert result.total == 800
    assert "capped at a maximum discount of 2.00 EUR" in result.lines[0].adjustments[0].why


def test_price_floor_is_per_unit_and_never_raises_a_price() -> None:
    floored = {
        "action": {"percentOff": "50"},
        "caps": {"priceFloor": {"amount": 700, "currency": "EUR"}},
    }
    assert single(1000, rule("half", floored)).total == 700
    assert single(1000, rule("half", floored), qty=2).total == 1400
    cheap = rule(
        "cheap", {"priority": 1, "action": {"fixedPrice": {"amount": 500, "currency": "EUR"}}}
    )
    result = single(1000, cheap, rule("half", floored))
    assert result.total == 500  # already under the floor: the floored rule takes nothing
    assert adjustments(result) == [("cheap", -500), ("half", 0)]


def test_amount_off_is_split_across_lines_by_largest_remainder() -> None:
    snap = snapshot(
        [product("a", 600), product("b", 300), product("c", 50)],
        [
            rule(
                "off",
                {
                    "target": {"products": ["a", "b"]},
                    "action": {"amountOff": {"amount": 100, "currency": "EUR"}},
                },
            )
        ],
    )
    result = quote(snap, [("a", 1), ("b", 1), ("c", 1)])
    # 100 * 600/900 = 66.67, 100 * 300/900 = 33.33 -> 66 + 33 = 99, the missing unit goes to
    # the largest remainder (line a).
    assert [line.total for line in result.lines] == [533, 267, 50]
    assert (result.subtotal, result.discount_total, result.total) == (950, 100, 850)


def test_amount_off_never_takes_a_line_below_zero() -> None:
    off = rule("off", {"action": {"amountOff": {"amount": 5000, "currency": "EUR"}}})
    result = single(900, off)
    assert (result.total, result.discount_total) == (0, 900)


def test_shadow_rules_are_traced_but_not_applied() -> None:
    live = rule("live", {"action": PCT10})
    shadow = rule("candidate", {"mode": "shadow", "priority": 50, "action": {"multiplier": "1.2"}})
    result = single(1000, live, shadow)
    assert result.total == 900
    assert [(a.rule.name, a.amount) for a in result.lines[0].shadow] == [("candidate", 200)]
    assert result.rules_used() == {"default/candidate": 1, "default/live": 1}


@pytest.mark.parametrize(
    ("fill", "total"),
    [("0.2", 1000), ("0.5", 1000), ("0.7", 1150), ("0.9", 1300), ("0.99", 1300)],
)
def test_demand_curve_is_piecewise_linear(fill: str, total: int) -> None:
    demand = rule(
        "demand",
        {
            "action": {
                "demandCurve": {
                    "points": [
                        {"fill": "0.5", "multiplier": "1.0"},
                        {"fill": "0.9", "multiplier": "1.3"},
                    ],
                    "floor": "0.9",
                    "ceiling": "1.5",
                }
            }
        },
    )
    assert single(1000, demand, fill_ratio=fill).total == total


def test_demand_curve_floor_and_ceiling_clamp() -> None:
    spec = {
        "points": [{"fill": "0", "multiplier": "0.5"}, {"fill": "1", "multiplier": "2"}],
        "floor": "0.8",
        "ceiling": "1.2",
    }
    demand = rule("demand", {"action": {"demandCurve": spec}})
    assert single(1000, demand, fill_ratio="0").total == 800
    assert single(1000, demand, fill_ratio="1").total == 1200
    assert single(1000, demand).total == 1000  # no fill ratio in the context: not applicable


def test_targets_are_anded_and_lists_are_ored() -> None:
    r = rule(
        "r",
        {
            "target": {"labels": ["course", "book"], "segments": ["student"], "minQuantity": 2},
            "action": PCT10,
        },
    )
    snap = snapshot([product("c", 1000, labels=("course",)), product("x", 1000)], [r])
    assert quote(snap, [("c", 2)], segment="student").total == 1800
    assert quote(snap, [("c", 1)], segment="student").total == 1000  # quantity too low
    assert quote(snap, [("c", 2)], segment="staff").total == 2000  # other segment
    assert quote(snap, [("x", 2)], segment="student").total == 2000  # label missing


def test_promotion_needs_its_code_and_checks_minimum_and_first_purchase() -> None:
    promo = rule(
        "promo",
        {
            "action": PCT10,
            "promotion": {
                "code": "Welcome",
                "minAmount": {"amount": 1500, "currency": "EUR"},
                "firstPurchaseOnly": True,
            },
        },
    )
    snap = snapshot([product("p", 1000)], [promo])
    assert quote(snap, [("p", 2)]).total == 2000
    applied = quote(snap, [("p", 2)], codes=["WELCOME"])
    assert applied.total == 1800
    assert applied.applied_codes() == ["welcome"]
    below = quote(snap, [("p", 1)], codes=["welcome"])
    assert below.total == 1000
    assert not below.codes[0].eligible
    assert "minimum of 15.00 EUR" in below.codes[0].reason
    returning = quote(snap, [("p", 2)], codes=["welcome"], first_purchase=False)
    assert not returning.codes[0].eligible


def test_rule_in_another_currency_does_not_apply() -> None:
    usd = rule("usd", {"action": {"amountOff": {"amount": 100, "currency": "USD"}}})
    assert single(1000, usd).total == 1000


@pytest.mark.parametrize(
    ("lines", "kwargs", "field"),
    [
        ([("nope", 1)], {}, "lines[0].product"),
        ([("p", 0)], {}, "lines[0].quantity"),
        ([("p", -1)], {}, "lines[0].quantity"),
        ([("p", 1)], {"codes": ["nosuch"]}, "codes[0]"),
    ],
)
def test_bad_input_names_the_field(
    lines: list[tuple[str, int]], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(QuoteInputError) as err:
        quote(snapshot([product("p", 1000)]), lines, **kwargs)
    assert err.value.field == field


def test_same_inputs_and_revisions_give_the_same_document() -> None:
    rules = [
        rule("a", {"action": {"percentOff": "33.3"}}),
        rule("b", {"action": {"amountOff": {"amount": 77, "currency": "EUR"}}}),
    ]
    snap = snapshot([product("p", 999), product("q", 501)], rules)
    first = result_document(quote(snap, [("p", 3), ("q", 7)]))
    second = result_document(quote(snap, [("p", 3), ("q", 7)]))
    assert first == second
    assert first["total"] == sum(line["total"] for line in first["lines"])
    for line in first["lines"]:
        assert (
            line["base"]["amount"] + sum(a["amount"] for a in line["adjustments"]) == line["total"]
        )
        assert Decimal(line["rounding"]["exact"]) - line["total"] <= Decimal("0.5")


def test_the_readme_trace() -> None:
    # The worked example in services/azora-pricing/README.md, amount for amount.
    snap = snapshot(
        [product("course-ai", 999, labels=("course",)), product("book", 333, labels=("book",))],
        [
            rule(
                "student",
                {"target": {"segments": ["student"]}, "action": {"percentOff": "15"}},
                revision=3,
            ),
            rule(
                "fiver",
                {"priority": 200, "action": {"amountOff": {"amount": 500, "currency": "EUR"}}},
                revision=4,
            ),
            rule(
                "peak",
                {
                    "mode": "shadow",
                    "priority": 50,
                    "target": {"labels": ["course"]},
                    "action": {"multiplier": "1.2"},
                },
                revision=5,
            ),
        ],
    )
    doc = result_document(quote(snap, [("course-ai", 1), ("book", 3)], segment="student"))
    assert (doc["subtotal"], doc["discount_total"], doc["total"]) == (1998, 800, 1198)
    line = doc["lines"][0]
    assert [(a["rule"], a["amount"], a["exact"], a["why"]) for a in line["adjustments"]] == [
        ("default/student", -150, "-149.85", "15% off [stack, priority 100]"),
        (
            "default/fiver",
            -250,
            "-250",
            "2.50 EUR off (this line's largest-remainder share of 5.00 EUR) [stack, priority 200]",
        ),
    ]
    assert [(s["rule"], s["amount"], s["exact"]) for s in line["shadow"]] == [
        ("default/peak", 200, "199.8")
    ]
    assert line["rounding"] == {"mode": "half-even", "exact": "599.15", "total": 599}
    assert doc["revisions"]["rules"] == {
        "default/fiver": 4,
        "default/peak": 5,
        "default/student": 3,
    }


def test_absurd_amounts_are_refused_not_overflowed() -> None:
    huge = product("huge", {"model": "perUnit", "unitAmount": 10**12})
    with pytest.raises(QuoteInputError) as err:
        quote(snapshot([huge]), [("huge", 10_000)])
    assert err.value.field == "lines"
    boost = rule("boost", {"action": {"multiplier": "1000"}})
    with pytest.raises(QuoteInputError):
        quote(snapshot([product("p", 10**12)], [boost]), [("p", 10)])
