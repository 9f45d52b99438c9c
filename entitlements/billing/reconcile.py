"""`entitlements reconcile stripe`: page through Stripe's subscriptions and repair the mirror.

Safe to run at any time: a subscription already mirrored as Stripe has it is left alone (no
write, no revision bump), so a second run changes nothing. A listed subscription that differs
from the mirror is read again in its turn and that answer is stored, so a list read before a
webhook's fetch never overwrites what the webhook stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from entitlements.billing.billing import Billing
from entitlements.errors import EntitlementsError, Unavailable

__all__ = ["ReconcileSummary", "reconcile"]

log = logging.getLogger(__name__)


@dataclass
class ReconcileSummary:
    seen: int = 0
    unchanged: int = 0
    #: Stripe subscription id -> the account whose mirror was repaired.
    repaired: dict[str, str] = field(default_factory=dict)
    #: Subscriptions no account could be found for.
    unlinked: list[str] = field(default_factory=list)
    #: Stripe subscription id -> why it could not be mirrored (e.g. an unknown price).
    errors: dict[str, str] = field(default_factory=dict)
    #: Mirrored Stripe subscriptions Stripe did not list.
    missing_upstream: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.repaired)

    def lines(self) -> list[str]:
        out = [
            f"stripe subscriptions seen: {self.seen}",
            f"repaired: {self.changed}",
            f"unchanged: {self.unchanged}",
        ]
        out += [f"  repaired {sub} (account {acc})" for sub, acc in sorted(self.repaired.items())]
        if self.unlinked:
            out.append(f"not linked to any account: {len(self.unlinked)}")
            out += [f"  {sub}" for sub in self.unlinked]
        if self.errors:
            out.append(f"not mirrored: {len(self.errors)}")
            out += [f"  {sub}: {why}" for sub, why in sorted(self.errors.items())]
        if self.missing_upstream:
            out.append(f"mirrored but not in Stripe: {len(self.missing_upstream)}")
            out += [f"  {sub}" for sub in self.missing_upstream]
        return out


async def reconcile(billing: Billing, *, page_size: int = 100) -> ReconcileSummary:
    """Mirror every Stripe subscription as Stripe has it now; report what changed."""
    summary = ReconcileSummary()
    known = await billing.store.stripe_subscriptions()
    seen: set[str] = set()
    async for sub in billing.gateway.list_subscriptions(page_size=page_size):
        summary.seen += 1
        seen.add(sub.id)
        account_id = await billing.account_of(sub)
        if not account_id:
            summary.unlinked.append(sub.id)
            continue
        try:
            async with billing.turn(sub.id) as turn:
                if await turn.mirrors(sub):
                    summary.unchanged += 1
                    continue
                result = await turn.mirror(
                    await billing.gateway.retrieve_subscription(sub.id), account_id
                )
        except Unavailable:
            raise
        except EntitlementsError as exc:
            log.error("Stripe subscription %s not mirrored: %s", sub.id, exc.message)
            summary.errors[sub.id] = exc.message
            continue
        if result.changed:
            log.info("repaired the mirror of %s (account %s)", sub.id, account_id)
            summary.repaired[sub.id] = account_id
        else:
            summary.unchanged += 1
    summary.missing_upstream = sorted(set(known) - seen)
    return summary
