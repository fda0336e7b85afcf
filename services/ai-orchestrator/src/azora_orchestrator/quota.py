"""Limits and budgets of virtual keys that hold across replicas: the shared state in PostgreSQL,
and each replica's lease of it.

The shared state of a key is its ``key_state`` row: two token buckets (requests/min,
tokens/min, refilled by the database clock), the budget window's ``spent`` and ``reserved``.
Every statement a replica sends for a key is ``vk_admit_lease`` (migration 0006), which under
the row's lock (1) gives back the unused part of this replica's lease, (2) admits the queued
requests exactly, in arrival order, reserving each estimate (the rule of ``vk_admit_many``,
migration 0005), and (3) grants a new lease slice. Settlement (the actual cost and tokens
replacing the estimates) is not a statement per request: the usage writer (usage.py) applies
the settlements of all requests finished in the last interval together with their usage
records, in one transaction.

**Leases.** A lease is a slice of the key's request bucket, token bucket and remaining budget
that one replica takes in one statement, reserved in ``key_state`` exactly like a reservation
(taken from the buckets, added to ``reserved``): every other replica sees it as used. Requests
are then admitted against the lease in memory, with no round trip; each takes its estimate out
of the lease, and that part becomes the request's own reservation, settled as before. When the
lease runs below half its size, or has lived half its time, a background statement tops it up
(prefetch), so steady traffic never waits on PostgreSQL. Sizes (``LeasePolicy``): at most
``lease_permille`` of each limit, and never more than the headroom left after the grant divided
by ``lease_safety`` (so at most 1/``lease_safety`` of what is left); a grant that could not
hold one request is refused whole. A lease lives ``lease_ttl_s`` (and never past the end of
its budget window); its unused part is given back when it expires, on shutdown, and when the
key is changed or revoked (the snapshot swap, keys.py). A revoked key is refused by
authentication before any lease is consulted, so revocation is as fast as before.

Near a limit the database refuses the grant, the lease runs out, and every request goes to
the exact path (step 2) with the replica's leftover given back in the same statement first: at
the limit, admission is exactly as without leases.

**The bound.** Budget: a request is admitted only while ``spent + reserved < budget`` with its
estimate in ``reserved`` before any other admission is checked (exact path), or out of a lease
slice that is itself in ``reserved`` and was granted only while ``spent + reserved + slice <=
budget`` (the grant leaves at least ``lease_safety`` x slice of headroom). So a lease never
takes the spend past the budget; only the exact path crosses it, as before: the spend of a
window passes the budget by at most the estimate of the last request admitted (minus one minor
unit) plus whatever requests cost beyond their estimates, that is by at most the reservations
in flight when it is crossed. With ``max_tokens`` given the output part of an estimate is an
upper bound; the prompt part is ``body bytes / 4`` tokens (an upper bound for English text).

Requests/min and tokens/min: every admission takes from the shared buckets, directly or via a
slice that was taken from them, and slices are granted only while the bucket holds
``lease_safety`` x the slice. What a slice defers is only *when* its requests are counted: in
any interval the key's replicas admit at most what the shared bucket allows in it plus the
slices held at its start, at most ``replicas x lease_permille`` of the limit (2 % each by
default: 6 % over three replicas), and never more than the bucket's capacity plus its refill
plus those slices. Unused slices come back within ``lease_ttl_s``, so a replica that stops
getting traffic holds nothing for longer than that.

Settlement applied a flush interval later only delays giving back the difference between
estimate and actual: that makes admission stricter, never looser. A give-back is asynchronous
(lost in a database crash: stricter); a grant commits durably, so a crash of the database never
forgets a slice a replica is spending. A crashed replica's slice stays in ``reserved`` until the
key's window resets (stricter; for a budget without a period, until an operator releases it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from azora_common.tasks import stop_tasks
from azora_orchestrator.cost import MILLION
from azora_orchestrator.keys import TOKENS, KeyInfo
from azora_orchestrator.routing import Route

LEASE_SQL = (
    "SELECT ok, reason, reserved, wait_s, spent, window_start, lease_rq, lease_tk, lease_b, "
    "lease_s FROM vk_admit_lease($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
    "$15, $16, $17, $18, $19)"
)

Pending = tuple[int, int, "asyncio.Future[Verdict]"]
NO_SLICE = (0, 0, 0)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str  # "", "requests", "tokens" or "budget"
    spent: int
    reserved: int
    window_start: datetime
    wait_s: float


def estimate_cost(key: KeyInfo, route: Route, prompt: int, completion: int) -> int:
    """The reservation: tokens for a token budget, else the route's highest price in the key's
    currency (the backend is not picked yet), rounded up to a minor unit."""
    if key.unit == TOKENS:
        return prompt + completion
    pin = pout = 0
    for backend in route.backends:
        price = backend.cfg.price
        if price is not None and price.currency == key.unit:
            pin = max(pin, price.input_per_million)
            pout = max(pout, price.output_per_million)
    return -(-(prompt * pin + completion * pout) // MILLION)


log = logging.getLogger("azora.orchestrator.quota")


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """How large a replica's slice of a key may be, and how long it lives."""

    permille: int = 20  # of each limit; 0: no leases, every request on the exact path
    ttl_s: float = 1.0
    safety: int = 4  # a grant leaves at least safety x the slice of headroom

    def sizes(self, key: KeyInfo) -> tuple[int, int, int]:
        # Integer arithmetic: the budget part is money (minor units).
        p = self.permille
        return (key.rpm * p // 1000, key.tpm * p // 1000, key.budget * p // 1000)


@dataclass(eq=False, slots=True)
class KeyLease:
    """One replica's slice of one key, and the requests of the key waiting for a statement."""

    key: KeyInfo
    sizes: tuple[int, int, int]
    rq: int = 0
    tk: int = 0
    b: int = 0
    window: datetime | None = None  # the budget window the slice's ``b`` is reserved in
    expires: float = 0.0  # time.monotonic(); the slice is not used from then on
    next_ask: float = 0.0  # no new grant asked before (one was just refused)
    last: float = -math.inf  # the previous request of the key on this replica
    need: tuple[int, int] = (0, 0)  # (tokens, cost) of the latest request: a grant's minimum
    queue: list[Pending] = field(default_factory=list)
    busy: bool = False  # a statement of this key is in flight (one at a time)
    top_up: bool = False
    give_back: bool = False
    retired: bool = False  # the key changed, was revoked or the replica stops

    def take(self, tokens: int, cost: int, now: float) -> Verdict | None:
        """Admit from the slice (no await: check-and-take is atomic on the event loop)."""
        key = self.key
        if (
            now >= self.expires
            or self.retired
            or self.window is None
            or (key.rpm and self.rq < 1)
            or (key.tpm and self.tk < tokens)
            # At least one unit stays held: the budget was not used up when it was granted.
            or (key.budget and self.b < max(cost, 1))
        ):
            return None
        if key.rpm:
            self.rq -= 1
        if key.tpm:
            self.tk -= tokens
        if key.budget:
            self.b -= cost
        return Verdict(True, "", 0, 0, self.window, 0.0)

    def low(self, now: float, ttl: float) -> bool:
        """Time to top up: half the slice used, or half its life gone."""
        key, (s_rq, s_tk, s_b) = self.key, self.sizes
        return (
            now >= self.expires - ttl / 2
            or bool(key.rpm and 2 * self.rq < s_rq)
            or bool(key.tpm and 2 * self.tk < s_tk)
            or bool(key.budget and 2 * self.b < s_b)
        )

    def fits(self) -> bool:
        """Whether a full slice would hold the latest request (else leasing is pointless)."""
        key, (s_rq, s_tk, s_b), (tokens, cost) = self.key, self.sizes, self.need
        return (
            not (key.rpm and s_rq < 1)
            and not (key.tpm and s_tk < max(tokens, 1))
            and not (key.budget and s_b < max(cost, 1))
        )

    def detach(self) -> tuple[int, int, int]:
        """The unused slice, handed back by the next statement (no longer usable here)."""
        back = (self.rq, self.tk, self.b)
        self.rq = self.tk = self.b = 0
        self.expires = 0.0
        return back

    @property
    def held(self) -> bool:
        return bool(self.rq or self.tk or self.b)


class SharedState:
    """The connection pool for the admission statements, and this replica's leases per key.

    A key's requests are admitted from the replica's lease when it holds enough (no round
    trip); otherwise they queue, and the queue goes in the key's next statement (coalesced: no
    waiting window, the first request goes at once, batches grow with load), one statement per
    key at a time. A key's row lock is then taken once per batch instead of once per request.
    """

    def __init__(self, dsn: str, size: int, policy: LeasePolicy | None = None) -> None:
        self.dsn = dsn
        self.size = size
        self.policy = policy or LeasePolicy()
        self.pool: asyncpg.Pool | None = None
        self._leases: dict[str, KeyLease] = {}
        # Round trips to PostgreSQL (statements) and requests admitted from a lease without one.
        self.statements = 0
        self.leased = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Admissions commit asynchronously (no WAL flush wait): a database crash may forget the
        # last few hundred milliseconds of reservations and bucket takes (README, "The
        # bound"). The usage writer's transactions (the settled spend) turn it back on, and so
        # does vk_admit_lease for a statement that granted a slice.
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.size,
            command_timeout=5,
            server_settings={"synchronous_commit": "off"},
            # Nothing here changes session state (no SET, LISTEN, advisory or prepared-by-name
            # state; SET LOCAL and set_config(..., true) end with their transaction), so a
            # connection going back to the pool needs no reset query: one round trip per
            # statement, not two.
            reset=_no_reset,
        )
        if self.policy.permille:
            self._sweeper = asyncio.create_task(self._sweep(), name="lease-sweeper")

    async def stop(self) -> None:
        """Give every unused slice back, then close the pool."""
        await stop_tasks(self._sweeper)
        for lease in list(self._leases.values()):
            self._retire(lease)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.pool is not None:
            await self.pool.close()

    def held(self, key_id: str) -> tuple[int, int, int]:
        """The slice this replica holds of a key: (requests, tokens, budget units)."""
        lease = self._leases.get(key_id)
        return (lease.rq, lease.tk, lease.b) if lease is not None else NO_SLICE

    def keys_changed(self, keys: dict[bytes, KeyInfo]) -> None:
        """A new key snapshot: slices of keys revoked, deleted or changed go back."""
        by_id = {k.id: k for k in keys.values()}
        for lease in list(self._leases.values()):
            key = by_id.get(lease.key.id)
            if key is not None and key == lease.key:
                lease.key = key  # the same limits: requests of the new snapshot match by identity
            else:
                self._retire(lease)

    async def admit(self, key: KeyInfo, tokens: int, cost: int) -> Verdict:
        now = time.monotonic()
        lease = self._leases.get(key.id)
        if lease is None or (lease.key is not key and lease.key != key):
            if lease is not None:
                self._retire(lease)
            lease = self._leases[key.id] = KeyLease(key, self.policy.sizes(key))
        busy_key = now - lease.last < self.policy.ttl_s
        lease.last = now
        lease.need = (tokens, cost)
        verdict = lease.take(tokens, cost, now)
        if verdict is not None:
            self.leased += 1
            if now >= lease.next_ask and lease.low(now, self.policy.ttl_s):
                lease.top_up = True
                self._kick(lease)
            return verdict
        # The exact path. A key with steady traffic asks for a slice in the same statement.
        if busy_key and self.policy.permille:
            lease.top_up = True
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        lease.queue.append((tokens, cost, future))
        self._kick(lease)
        return await future

    def _retire(self, lease: KeyLease) -> None:
        lease.retired = True
        if self._leases.get(lease.key.id) is lease:
            del self._leases[lease.key.id]
        if lease.held:
            lease.give_back = True
        self._kick(lease)

    def _kick(self, lease: KeyLease) -> None:
        if lease.busy or not (lease.queue or lease.top_up or lease.give_back):
            return
        lease.busy = True
        self._tasks.add(task := asyncio.create_task(self._drain(lease)))
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, lease: KeyLease) -> None:
        try:
            while await self._statement(lease):
                pass
        finally:
            lease.busy = False

    async def _statement(self, lease: KeyLease) -> bool:
        """One statement for the key: what is queued, given back or wanted. False: nothing."""
        policy, now = self.policy, time.monotonic()
        batch, lease.queue = lease.queue, []
        if batch and lease.window is not None:
            # A slice may have come with the previous statement: serve from it first.
            batch = [p for p in batch if not self._serve(lease, p, now)]
        back, back_ws, want = NO_SLICE, lease.window, NO_SLICE
        if batch or lease.give_back:
            # The exact path counts every slice but this replica's own leftover, which the
            # statement gives back before checking.
            back = lease.detach()
        ask = (
            lease.top_up
            and not lease.retired
            and now >= lease.next_ask
            and policy.permille > 0
            and lease.fits()
        )
        if ask:
            s_rq, s_tk, s_b = lease.sizes
            want = (max(0, s_rq - lease.rq), max(0, s_tk - lease.tk), max(0, s_b - lease.b))
        lease.top_up = lease.give_back = False
        if not batch and back == NO_SLICE and want == NO_SLICE:
            return False
        key = lease.key
        tokens, cost = lease.need
        try:
            assert self.pool is not None
            row = await self.pool.fetchrow(
                LEASE_SQL,
                key.id,
                key.rpm,
                key.tpm,
                key.budget,
                key.period_s,
                [t for t, _, _ in batch],
                [c for _, c, _ in batch],
                *back,
                back_ws,
                *want,
                1,
                max(tokens, 1),
                max(cost, 1),
                policy.safety,
                policy.ttl_s,
            )
            self.statements += 1
            if row is None or len(row["ok"]) != len(batch):
                raise RuntimeError(f"vk_admit_lease answered for {row and len(row['ok'])}")
        except BaseException as exc:
            # A slice being given back stays reserved in the database (stricter, not looser).
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError("cancelled")
                    )
            if not isinstance(exc, Exception):
                for _, _, future in lease.queue:
                    if not future.done():
                        future.set_exception(RuntimeError("the admission queue stopped"))
                lease.queue = []
                raise
            log.warning("key statement failed for %s", key.id, exc_info=True)
            lease.next_ask = now + policy.ttl_s / 2
            return bool(lease.queue or lease.give_back)
        ws: datetime = row["window_start"]
        spent: int = row["spent"]
        for (_, _, future), ok, reason, reserved, wait in zip(
            batch, row["ok"], row["reason"], row["reserved"], row["wait_s"], strict=True
        ):
            if not future.done():
                future.set_result(
                    Verdict(
                        ok,
                        reason,
                        spent,
                        reserved,
                        ws,
                        wait if wait is not None and math.isfinite(wait) else 0.0,
                    )
                )
        if lease.window != ws:  # a new budget window: what the slice held there is void
            lease.b = 0
            lease.window = ws
        g_rq, g_tk, g_b = row["lease_rq"], row["lease_tk"], row["lease_b"]
        if g_rq or g_tk or g_b:
            lease.rq += g_rq
            lease.tk += g_tk
            lease.b += g_b
            lease.expires = now + row["lease_s"]  # measured from before the statement: earlier
            if lease.retired:
                lease.give_back = True
        elif ask:
            lease.next_ask = now + policy.ttl_s / 2  # refused: near a limit
        return bool(lease.queue or lease.give_back or (lease.retired and lease.held))

    def _serve(self, lease: KeyLease, pending: Pending, now: float) -> bool:
        tokens, cost, future = pending
        if future.done():
            return True
        verdict = lease.take(tokens, cost, now)
        if verdict is None:
            return False
        self.leased += 1
        future.set_result(verdict)
        return True

    async def _sweep(self) -> None:
        """Slices that expired unused go back; idle keys are forgotten."""
        ttl = self.policy.ttl_s
        while True:
            await asyncio.sleep(max(0.05, ttl / 4))
            now = time.monotonic()
            for lease in list(self._leases.values()):
                if lease.busy or now < lease.expires:
                    continue
                if lease.held:
                    lease.give_back = True
                    self._kick(lease)
                elif not lease.queue and now - lease.last > ttl:
                    self._leases.pop(lease.key.id, None)
