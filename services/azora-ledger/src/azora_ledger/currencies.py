"""ISO 4217 currencies and their minor-unit exponents.

Amounts are integers in minor units, so the exponent (``scale``) is part of what an amount
means: 1234 EUR is 12.34 EUR, 1234 JPY is 1234 JPY. A code that is not in this table is a custom
asset (loyalty points, a token) and must declare its scale explicitly.
"""

from __future__ import annotations

import re

_BY_SCALE = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP "
        "BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
        "GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
        "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN "
        "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
        "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UZS VES WST "
        "XCD YER ZAR ZMW ZWL"
    ),
}
ISO_4217_SCALES: dict[str, int] = {
    code: scale for scale, codes in _BY_SCALE.items() for code in codes.split(" ")
}

CURRENCY_CODE = re.compile(r"^[A-Z][A-Z0-9_]{2,15}$")
MAX_SCALE = 18


def resolve_scale(currency: str, scale: int | None) -> int:
    """The minor-unit exponent for ``currency``; raises ``ValueError`` with the reason."""
    iso = ISO_4217_SCALES.get(currency)
    if iso is not None:
        if scale is not None and scale != iso:
            raise ValueError(f"{currency} has {iso} decimal places (ISO 4217), not {scale}")
        return iso
    if len(currency) == 3 and currency.isalpha():
        raise ValueError(f"{currency} is not an ISO 4217 currency; use a longer custom asset code")
    if scale is None:
        raise ValueError(f"{currency} is a custom asset: give its scale (0..{MAX_SCALE})")
    return scale
