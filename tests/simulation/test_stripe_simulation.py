"""Seeded simulation of card billing under hostile timing: the real billing code (two replicas
sharing one SQLite file or PostgreSQL database, the real Stripe SDK against the Stripe-shaped
server) driven through random interleavings of what Stripe does and what it delivers.

Each seed runs a few rounds. In a round, Stripe-side actions (checkouts, paid and delayed
payments, renewals, failures, recoveries, cancellations, plan changes from the portal and
through BillingService, reconciliation) interleave with webhook deliveries to either replica:
duplicated, reordered, concurrent, and with API answers held back after Stripe read its state
(so a delivery may write a state older than one already written), and replicas are killed
mid-delivery and started again. Then Stripe delivers what it still owes (as it retries), and
the invariants are checked against Stripe's own state:
- every replica answers each account with the plan Stripe's latest state grants (past_due keeps
  it: no step outlasts the grace period; a delayed payment grants nothing until it arrives);
- the revenue AdminService reports equals the sum of the invoices Stripe settled, each once;
- every event is eventually acknowledged (no event that Stripe would retry forever).
A failing seed prints its steps; replay it with ENTITLEMENTS_SIM_SEED.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from entitlements.billing import CheckoutRequest, reconcile
from entitlements.errors import EntitlementsError
from entitlements.store.billing_repository import BillingStore
from entitlements.store.migrate import upgrade
from entitlements.store.repository import Store
from tests.conftest import PostgresServer
from tests.simulation.seeds import Trace, seeds
from tests.simulation.stripe_world import (
    MONTHLY,
    Account,
    Delivery,
    Replica,
    World,
    iter_prices,
    reset,
    world_settings,
)
from tests.stripe_double import StripeDouble
from tests.stripe_double.server import Delay

ACCOUNTS = 1
ROUNDS = 1
PLANS = tuple(MONTHLY)
LIVE = ("active", "past_due", "trialing")
#: How long a step waits for a delivery to reach a held answer, or to finish.
SETTLE_S = 0.005


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sim_database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer
) -> AsyncIterator[str]:
    """One database for every seed of the run (reset between seeds)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sim.db'}"
        await upgrade(url)
        yield url
        return
    url = await postgres_server.create_database()
    try:
        await upgrade(url)
        yield url
    finally:
        await postgres_server.drop_database(url)


# A killed replica's connections are dropped mid-transaction, as a dead process's would be.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_stripe_billing_holds_its_invariants_under_hostile_timing(sim_database: str) -> None:
    double = StripeDouble()
    await double.start()
    for price_id, amount, interval in iter_prices():
        double.add_price(price_id, amount=amount, interval=interval)
    settings = world_settings(double, sim_database)
    replicas = [Replica(name, sim_database, settings) for name in ("A", "B")]
    admin_store = Store.open(sim_database)
    for replica in replicas:
        await replica.start()
    ran = 0
    started = time.monotonic()
    try:
        for seed in seeds():
            await reset(admin_store, double)
            await Simulation(seed, World(double, replicas)).run()
            ran += 1
    finally:
        for replica in replicas:
            await replica.stop()
        await admin_store.close()
        await double.stop()
    print(f"stripe simulation: {ran} seeds in {time.monotonic() - started:.1f} s")


class Simulation:
    def __init__(self, seed: int, world: World) -> None:
        self.rng = random.Random(seed)
        self.world = world
        self.trace = Trace("test_stripe_simulation", seed)
        self.gates: list[tuple[Delay, asyncio.Task[Any]]] = []
        #: Deliveries started in this round, with their tasks.
        self.flying: list[tuple[Delivery, asyncio.Task[Any]]] = []
        self.world.accounts = [Account(f"s{seed}-acct{i}") for i in range(ACCOUNTS)]
        self.world.settled = {}
        self.world.deliveries = []

    def fail(self, invariant: str) -> None:
        pytest.fail(self.trace.failure(invariant), pytrace=False)

    async def run(self) -> None:
        for round_ in range(ROUNDS):
            self.trace.step(f"-- round {round_ + 1}")
            for _ in range(self.rng.randint(1, 3)):
                await self.step()
            await self.settle_round()
            await self.check()

    # --- one step: something Stripe does, or a delivery, a release, a duplicate, a crash ----------

    async def step(self) -> None:
        roll = self.rng.random()
        pending = self.world.pending()
        if roll < 0.4 or not pending:
            await self.stripe_action()
        elif roll < 0.75:
            await self.deliver(self.rng.choice(pending))
        elif roll < 0.85 and self.gates:
            await self.release(self.rng.choice(self.gates))
        elif roll < 0.95:
            done = [d for d in self.world.deliveries if d.done] or pending
            await self.deliver(self.rng.choice(done), duplicate=True)
        else:
            replica = self.rng.choice(self.world.replicas)
            self.trace.step(f"replica {replica.name} is killed and restarts")
            await replica.crash()

    async def deliver(self, delivery: Delivery, *, duplicate: bool = False) -> None:
        replica = self.rng.choice(self.world.replicas)
        slow = self.rng.random() < 0.5
        sub_id = _subscription_of(delivery.body)
        gate = None
        if slow and sub_id:
            gate = self.world.double.delay("GET", f"subscriptions/{sub_id}")
        kind = "again" if duplicate else "deliver"
        late = " (its fetch answers late)" if gate else ""
        self.trace.step(f"{kind} {delivery.label} to {replica.name}{late}")
        task = replica.spawn(self.world.deliver(delivery, replica))
        self.flying.append((delivery, task))
        if gate is not None:
            self.gates.append((gate, task))
            await _first(task, gate.arrived)
        else:
            await _first(task)

    async def release(self, held: tuple[Delay, asyncio.Task[Any]]) -> None:
        gate, task = held
        self.gates.remove(held)
        self.trace.step(f"a held answer ({gate.path}) arrives")
        gate.release.set()
        await _first(task)

    async def settle_round(self) -> None:
        world = self.world
        # Some held answers arrive now; the others only after Stripe has delivered everything
        # else once more (the adversarial order: the oldest read lands last).
        for held in list(self.gates):
            if self.rng.random() < 0.5:
                await self.release(held)
        in_flight = {id(d) for d, t in self.flying if not t.done()}
        for delivery in world.pending():
            if id(delivery) in in_flight:
                continue
            replica = self.rng.choice(world.replicas)
            self.trace.step(f"stripe delivers {delivery.label} to {replica.name}")
            task = replica.spawn(world.deliver(delivery, replica))
            self.flying.append((delivery, task))
            await _first(task)
        for held in list(self.gates):
            await self.release(held)
        world.double.clear_delays()
        tasks = [t for r in world.replicas for t in r.tasks]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=10)
            if stuck:
                self.fail(f"{len(stuck)} deliveries or calls never finished")
        self.flying.clear()
        # Stripe retries what was not acknowledged, in its own order.
        for _ in range(5):
            pending = world.pending()
            if not pending:
                break
            self.rng.shuffle(pending)
            for delivery in pending:
                replica = self.rng.choice(world.replicas)
                self.trace.step(f"retry {delivery.label} to {replica.name}")
                outcome = await world.deliver(delivery, replica)
                if outcome.outcome == "failed":
                    self.trace.step(f"  -> failed: {outcome.detail}")
        if world.pending():
            self.fail(f"events never acknowledged: {[d.label for d in world.pending()]}")

    # --- what happens on Stripe's side ------------------------------------------------------

    async def stripe_action(self) -> None:
        # Stripe's clock moves on by whole seconds, often not at all (`created` ties).
        self.world.clock += self.rng.choice((0, 0, 1, 2, 60))
        account = self.rng.choice(self.world.accounts)
        sub = self.world.sub(account)
        status = sub["status"] if sub is not None else None
        choices: list[Callable[[Account, dict[str, Any]], Awaitable[str | None]]] = []
        if status is None or status in ("canceled", "incomplete_expired"):
            choices = [self.checkout]
        elif status == "unpaid":
            choices = [self.cancel]
        else:
            assert sub is not None
            session = self.world.double.checkout_sessions.get(account.session_id or "")
            if session is not None and session["payment_status"] != "paid":
                if status != "canceled":
                    choices = [self.pay_delayed, self.fail_delayed]
            elif status == "active":
                choices = [self.change, self.renew, self.fail_renewal, self.cancel]
                choices += [self.cancel_at_end, self.resume, self.api_change, self.api_cancel]
            elif status == "past_due":
                choices = [self.recover, self.give_up, self.change, self.api_change]
        choices.append(self.reconcile)
        action = self.rng.choice(choices)
        what = await action(account, sub or {})
        if what:
            self.trace.step(f"stripe: {account.id} {what}")

    async def checkout(self, account: Account, _: dict[str, Any]) -> str | None:
        plan = self.rng.choice(PLANS)
        delayed = self.rng.random() < 0.25
        replica = self.rng.choice(self.world.replicas)
        try:
            session = await replica.billing.create_checkout(
                CheckoutRequest(
                    account_id=account.id,
                    plan_id=plan,
                    interval="month",
                    success_url="https://nchat.example/ok",
                    cancel_url="https://nchat.example/no",
                )
            )
        except EntitlementsError as exc:
            return f"checkout refused by {replica.name}: {exc.message}"
        double = self.world.double
        done, sub = double.complete_checkout(
            session.id, payment_status="unpaid" if delayed else "paid"
        )
        account.sub_id, account.session_id = sub["id"], session.id
        self.world.send("checkout.session.completed", done)
        self.world.send("customer.subscription.created", sub)
        if not delayed:
            self.paid(double.invoice(sub["id"], paid=True))
        return f"checks out {plan} ({sub['id']}){' paying by a delayed method' if delayed else ''}"

    def paid(self, invoice: dict[str, Any]) -> None:
        self.world.settled[invoice["id"]] = invoice["amount_paid"]
        self.world.send("invoice.paid", invoice)

    async def pay_delayed(self, account: Account, sub: dict[str, Any]) -> str:
        session = self.world.double.pay_checkout(account.session_id or "")
        self.world.send("checkout.session.async_payment_succeeded", session)
        self.paid(self.world.double.invoice(sub["id"], paid=True))
        return "delayed payment succeeds"

    async def fail_delayed(self, account: Account, sub: dict[str, Any]) -> str:
        session = self.world.double.checkout_sessions[account.session_id or ""]
        now = self.world.now()
        self.world.double.update_subscription(sub["id"], status="incomplete_expired", ended_at=now)
        self.world.send("checkout.session.async_payment_failed", self.world.double.public(session))
        self.world.send("customer.subscription.deleted", sub)
        return "delayed payment fails; the subscription expires"

    async def change(self, _: Account, sub: dict[str, Any]) -> str:
        plan = self.rng.choice(PLANS)
        self.world.double.update_subscription(sub["id"], price=MONTHLY[plan])
        self.world.send("customer.subscription.updated", sub)
        return f"changes to {plan} in the portal"

    async def renew(self, _: Account, sub: dict[str, Any]) -> str:
        self.paid(self.world.double.invoice(sub["id"], paid=True))
        return "renews (paid)"

    async def fail_renewal(self, account: Account, sub: dict[str, Any]) -> str:
        self.world.double.update_subscription(sub["id"], status="past_due")
        invoice = self.world.double.invoice(
            sub["id"], paid=False, next_attempt=self.world.now() + 3 * 86400
        )
        account.open_invoice = invoice["id"]
        self.world.send("invoice.payment_failed", invoice)
        self.world.send("customer.subscription.updated", sub)
        return "renewal fails: past_due"

    async def recover(self, account: Account, sub: dict[str, Any]) -> str:
        self.world.double.update_subscription(sub["id"], status="active")
        invoice = self.world.double.invoices[account.open_invoice or ""]
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            next_payment_attempt=None,
            status_transitions={"paid_at": self.world.now()},
        )
        account.open_invoice = None
        self.paid(invoice)
        self.world.send("customer.subscription.updated", sub)
        return "retry succeeds: active"

    async def give_up(self, _: Account, sub: dict[str, Any]) -> str:
        if self.rng.random() < 0.5:
            self.world.double.update_subscription(sub["id"], status="unpaid")
            self.world.send("customer.subscription.updated", sub)
            return "retries exhausted: unpaid"
        now = self.world.now()
        self.world.double.update_subscription(
            sub["id"], status="canceled", canceled_at=now, ended_at=now
        )
        self.world.send("customer.subscription.deleted", sub)
        return "retries exhausted: canceled"

    async def cancel(self, _: Account, sub: dict[str, Any]) -> str:
        now = self.world.now()
        self.world.double.update_subscription(
            sub["id"], status="canceled", canceled_at=now, ended_at=now
        )
        self.world.send("customer.subscription.deleted", sub)
        return "cancels now (portal)"

    async def cancel_at_end(self, _: Account, sub: dict[str, Any]) -> str:
        self.world.double.update_subscription(sub["id"], cancel_at_period_end=True)
        self.world.send("customer.subscription.updated", sub)
        return "cancels at period end (portal)"

    async def resume(self, _: Account, sub: dict[str, Any]) -> str:
        self.world.double.update_subscription(sub["id"], cancel_at_period_end=False)
        self.world.send("customer.subscription.updated", sub)
        return "resumes (portal)"

    async def api_change(self, account: Account, sub: dict[str, Any]) -> str:
        plan = self.rng.choice(PLANS)
        replica = self.rng.choice(self.world.replicas)
        billing = replica.billing
        self._api(
            replica, sub["id"], lambda: billing.change_plan(account.id, plan_id=plan, interval=None)
        )
        return f"UpdateSubscription to {plan} on {replica.name} (in flight)"

    async def api_cancel(self, account: Account, sub: dict[str, Any]) -> str:
        replica = self.rng.choice(self.world.replicas)
        billing = replica.billing
        self._api(replica, sub["id"], lambda: billing.cancel(account.id, at_period_end=False))
        return f"CancelSubscription on {replica.name} (in flight)"

    def _api(self, replica: Replica, sub_id: str, call: Callable[[], Awaitable[Any]]) -> None:
        """A BillingService call in flight; Stripe sends the event of whatever it changed,
        also when the replica dies before the answer."""
        double = self.world.double
        before = json.dumps(double.subscriptions[sub_id], sort_keys=True)

        async def run() -> None:
            try:
                await call()
            except EntitlementsError:
                pass
            finally:
                after = double.subscriptions[sub_id]
                if json.dumps(after, sort_keys=True) != before:
                    kind = "deleted" if after["status"] == "canceled" else "updated"
                    self.world.send(f"customer.subscription.{kind}", after)

        replica.spawn(run())

    async def reconcile(self, _: Account, __: dict[str, Any]) -> str:
        replica = self.rng.choice(self.world.replicas)
        replica.spawn(reconcile(replica.billing))
        return f"(operator) reconcile stripe on {replica.name} (in flight)"

    # --- the invariants ---------------------------------------------------------------------

    async def check(self) -> None:
        world = self.world
        for account in world.accounts:
            expected = world.expected_plan(account)
            for replica in world.replicas:
                got = await replica.plan(account.id)
                if got != expected:
                    self.fail(
                        f"{account.id} on replica {replica.name} has {got!r}; Stripe grants "
                        f"{expected!r} ({_describe(world, account)})"
                    )
        metrics = await world.replicas[0].admin.revenue_metrics()
        if metrics.total_revenue_cents != world.expected_revenue():
            self.fail(
                f"revenue {metrics.total_revenue_cents} != settled {world.expected_revenue()} "
                f"({sorted(world.settled.items())})"
            )
        billing = BillingStore(world.replicas[0].store)
        recorded: list[str] = []
        for account in world.accounts:
            recorded += [p.stripe_invoice_id for p in await billing.paid_invoices(account.id)]
        if sorted(recorded) != sorted(world.settled):
            self.fail(f"paid invoices recorded {sorted(recorded)} != {sorted(world.settled)}")
        plans = dict(metrics.plan_distribution)
        for plan in PLANS:
            count = sum(world.expected_plan(a) == plan for a in world.accounts)
            if plans.get(plan, 0) != count:
                self.fail(f"AdminService counts {plans.get(plan, 0)} on {plan}; Stripe {count}")


async def _first(task: asyncio.Task[Any], reached: asyncio.Event | None = None) -> None:
    """Wait until `task` is done or has `reached` its held answer, at most SETTLE_S (it may be
    waiting for its subscription's turn); leave it running."""
    waits: set[asyncio.Future[Any]] = {task}
    waiter = asyncio.ensure_future(reached.wait()) if reached is not None else None
    if waiter is not None:
        waits.add(waiter)
    await asyncio.wait(waits, timeout=SETTLE_S, return_when=asyncio.FIRST_COMPLETED)
    if waiter is not None:
        waiter.cancel()


def _subscription_of(body: dict[str, Any]) -> str | None:
    obj = body["data"]["object"]
    if body["type"].startswith("customer.subscription."):
        return str(obj["id"])
    if body["type"].startswith("checkout.session."):
        return obj.get("subscription")
    parent = obj.get("parent") or {}
    return (parent.get("subscription_details") or {}).get("subscription")


def _describe(world: World, account: Account) -> str:
    sub = world.sub(account)
    if sub is None:
        return "no subscription"
    session = world.double.checkout_sessions.get(account.session_id or "")
    return (
        f"{sub['id']} {sub['status']} {sub['items']['data'][0]['price']['id']}"
        f" checkout {session['payment_status'] if session else None}"
    )
