"""Pure quote arithmetic (Decimal and integers only, never floats): a plan price in cents becomes
an exact amount in base units whose low digits identify the payment.

An amount is ``base + slot * quantum`` where ``base`` is a multiple of ``unit = quantum * 10**4``
and ``1 <= slot <= 9999``. So ``(value % unit) // quantum`` gives the slot back from any transfer,
even one for the wrong total: an underpayment or an overpayment still names its payment.

- stablecoins: quantum ``10**(decimals - 6)`` (one millionth of a dollar), unit one cent, base the
  exact price: $25.00 is paid as 25.000137 for slot 137 (at most 0.9999 cent more).
- ETH: quantum one gwei, unit 10**13 wei (0.00001 ETH), base the price at the locked rate rounded
  up to a unit: the slot adds less than 0.00001 ETH.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext

__all__ = ["MAX_SLOT", "AmountScheme", "format_amount", "scheme_for"]

MAX_SLOT = 9999
_SLOTS = 10_000


@dataclass(frozen=True, slots=True)
class AmountScheme:
    """How amounts are built and read back for one currency and decimals."""

    decimals: int
    quantum: int

    @property
    def unit(self) -> int:
        return self.quantum * _SLOTS

    def amount(self, base: int, slot: int) -> int:
        if not 1 <= slot <= MAX_SLOT:
            raise ValueError(f"slot {slot} out of range")
        return base + slot * self.quantum

    def slot_of(self, value: int) -> int | None:
        """The slot a transferred value carries, None if it carries none (a round amount)."""
        rest = value % self.unit
        if rest % self.quantum:
            return None
        slot = rest // self.quantum
        return slot if 1 <= slot <= MAX_SLOT else None

    def stable_base(self, price_cents: int) -> int:
        """A stablecoin price: the exact number of cents in base units."""
        scale: int = 10 ** (self.decimals - 2)
        return price_cents * scale

    def eth_base(self, price_cents: int, usd_per_eth: Decimal) -> int:
        """The price in wei at `usd_per_eth`, rounded up to a whole unit."""
        if usd_per_eth <= 0:
            raise ValueError("the ETH price must be positive")
        with localcontext() as ctx:
            ctx.prec = 80
            wei = Decimal(price_cents) * Decimal(10) ** self.decimals / (usd_per_eth * 100)
            units = (wei / self.unit).to_integral_value(rounding=ROUND_CEILING)
        return int(units) * self.unit


def scheme_for(currency: str, decimals: int) -> AmountScheme:
    """The scheme for a currency with `decimals`; ValueError when the token is too coarse."""
    if currency == "ETH":
        if decimals < 13:
            raise ValueError(f"native coin with {decimals} decimals")
        return AmountScheme(decimals, 10 ** (decimals - 9))
    if decimals < 6:
        raise ValueError(f"a token with {decimals} decimals cannot carry a unique amount")
    return AmountScheme(decimals, 10 ** (decimals - 6))


def format_amount(base_units: int, decimals: int) -> str:
    """Base units as a plain decimal string, trailing zeros removed: 25000137, 6 -> "25.000137"."""
    sign = "-" if base_units < 0 else ""
    digits = str(abs(base_units)).rjust(decimals + 1, "0")
    whole, frac = (digits[:-decimals], digits[-decimals:]) if decimals else (digits, "")
    frac = frac.rstrip("0")
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"
