"""ISO 4217 minor units and per-currency rounding.

Amounts inside the engine are ``Decimal`` counts of *minor units* (cents for EUR, yen for JPY),
so rounding to the currency's precision is always rounding to an integer; the exponent is only
needed to show an amount in major units. The mode is per currency because some markets settle
ties differently (banker's rounding is the default: it has no upward bias over many lines).
"""

from __future__ import annotations

from decimal import ROUND_HALF_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

# Active ISO 4217 codes by their number of minor-unit digits (the "E" column of the standard).
_BY_EXPONENT: Final[dict[int, str]] = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
        "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
        "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
        "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
        "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
        "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
        "UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

MINOR_UNITS: Final[dict[str, int]] = {
    code: exponent for exponent, codes in _BY_EXPONENT.items() for code in codes.split()
}


class RoundingMode(StrEnum):
    HALF_EVEN = "half-even"
    HALF_UP = "half-up"  # ties away from zero
    HALF_DOWN = "half-down"  # ties towards zero


_DECIMAL_MODES: Final[dict[RoundingMode, str]] = {
    RoundingMode.HALF_EVEN: ROUND_HALF_EVEN,
    RoundingMode.HALF_UP: ROUND_HALF_UP,
    RoundingMode.HALF_DOWN: ROUND_HALF_DOWN,
}

_ONE = Decimal(1)


def is_currency(code: str) -> bool:
    return code in MINOR_UNITS


def round_minor(amount: Decimal, mode: RoundingMode) -> int:
    """Round an exact amount of minor units to a whole minor unit."""
    return int(amount.quantize(_ONE, rounding=_DECIMAL_MODES[mode]))


def format_money(amount: Decimal | int, currency: str) -> str:
    """``12345, EUR`` -> ``123.45 EUR``; exact fractions of a minor unit are kept."""
    exponent = MINOR_UNITS.get(currency, 2)
    major = Decimal(amount).scaleb(-exponent)
    if isinstance(amount, int) or major == major.quantize(Decimal(1).scaleb(-exponent)):
        major = major.quantize(Decimal(1).scaleb(-exponent))
    return f"{major} {currency}"


class RoundingPolicy:
    """The rounding mode of every currency: a default plus per-currency overrides."""

    __slots__ = ("default", "overrides")

    def __init__(
        self,
        overrides: dict[str, RoundingMode] | None = None,
        default: RoundingMode = RoundingMode.HALF_EVEN,
    ) -> None:
        self.default = default
        self.overrides = dict(overrides or {})

    def mode(self, currency: str) -> RoundingMode:
        return self.overrides.get(currency, self.default)
