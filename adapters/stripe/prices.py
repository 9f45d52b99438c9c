"""The one place Stripe price ids map to (plan, interval) and back; nothing else guesses."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Literal

from entitlements.errors import InvalidArgument, UnknownPrice

__all__ = ["INTERVALS", "PAID_PLANS", "Interval", "PriceBook"]

Interval = Literal["month", "year"]

#: The self-serve plans sold through Stripe Checkout (enterprise is custom, free is free).
PAID_PLANS = ("starter", "pro", "business")
#: Interval -> the word in the seed's variable names (STRIPE_PRO_MONTHLY_PRICE_ID).
INTERVALS: Mapping[Interval, str] = MappingProxyType({"month": "MONTHLY", "year": "YEARLY"})


class PriceBook:
    """(plan, interval) <-> Stripe price id, both ways, refusing ambiguity at start."""

    def __init__(self, prices: Mapping[tuple[str, str], str] | None = None) -> None:
        self._by_plan: dict[tuple[str, Interval], str] = {}
        self._by_price: dict[str, tuple[str, Interval]] = {}
        for (plan, interval), price_id in (prices or {}).items():
            if plan not in PAID_PLANS or interval not in INTERVALS:
                raise ValueError(f"no Stripe price can be configured for {plan}/{interval}")
            key = (plan, interval)
            if price_id in self._by_price:
                other = self._by_price[price_id]
                raise ValueError(
                    f"Stripe price {price_id!r} is configured for both {other[0]}/{other[1]} "
                    f"and {plan}/{interval}"
                )
            self._by_plan[key] = price_id  # type: ignore[index]
            self._by_price[price_id] = key  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._by_plan)

    def __iter__(self) -> Iterator[tuple[str, Interval]]:
        return iter(self._by_plan)

    def price_for(self, plan_id: str, interval: Interval, *, field: str = "plan_id") -> str:
        """The price of `plan_id` per `interval`; InvalidArgument naming `field` if none."""
        if plan_id not in PAID_PLANS:
            raise InvalidArgument(
                field, f"plan {plan_id!r} cannot be bought by card: choose one of {PAID_PLANS}"
            )
        price = self._by_plan.get((plan_id, interval))
        if price is None:
            raise InvalidArgument(
                field, f"the {plan_id} plan has no Stripe price configured per {interval}"
            )
        return price

    def plan_for(self, price_id: str) -> tuple[str, Interval]:
        """(plan, interval) of a Stripe price; UnknownPrice if it is not configured."""
        try:
            return self._by_price[price_id]
        except KeyError:
            raise UnknownPrice(price_id) from None
