"""The cost of a request, in integer minor units: never a float.

Prices are integer minor units per million tokens (``AIModelRoute`` ``backends[].price``). The
cost of one request is ``(prompt x input + completion x output) / 1,000,000`` rounded half-up to
one minor unit, once per request (not per token type). The integer expression below is exactly
``Decimal(n) / 10**6`` quantized with ``ROUND_HALF_UP`` for the non-negative ``n`` it gets
(tests compare the two); it avoids constructing Decimals on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class BackendPrice:
    currency: str
    input_per_million: int
    output_per_million: int

    def cost(self, prompt: int, completion: int) -> int:
        return cost_minor(prompt * self.input_per_million + completion * self.output_per_million)


def cost_minor(micro: int) -> int:
    """``micro`` (minor units x 10**6) rounded half-up to a minor unit."""
    return (2 * micro + MILLION) // (2 * MILLION)
