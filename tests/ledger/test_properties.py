"""Property-based: random sequences of transfers, pendings, posts, voids and reversals, checked
against a plain Python model of the books after every step; point-in-time balances are compared
with a recomputation from the model's entries; the database's own verification finds nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azora_ledger.repository import driver_connection
from azora_ledger.verify import repository as verify_repo
from tests.ledger.conftest import open_account, transfer

TYPES = ["asset", "asset", "liability", "revenue"]  # index 2 may not be overdrawn
NOW = datetime.now(UTC).replace(microsecond=0)

amounts = st.integers(min_value=1, max_value=500)
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("transfer"), st.integers(0, 3), st.integers(0, 3), amounts, st.integers(0, 40)
        ),
        st.tuples(st.just("pending"), st.integers(0, 3), st.integers(0, 3), amounts),
        st.tuples(st.just("post"), st.integers(0, 50), st.integers(0, 100)),
        st.tuples(st.just("void"), st.integers(0, 50)),
        st.tuples(st.just("reverse"), st.integers(0, 50), st.integers(0, 100)),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class Acc:
    type: str
    pd: int = 0
    pc: int = 0
    qd: int = 0
    qc: int = 0

    def ok(self, flagged: bool) -> bool:
        return not flagged or self.pd + self.qd <= self.pc

    def normal(self, debits: int, credits: int) -> int:
        return debits - credits if self.type == "asset" else credits - debits


@dataclass
class Model:
    accounts: list[Acc] = field(default_factory=lambda: [Acc(t) for t in TYPES])
    entries: list[tuple[datetime, int, str, int]] = field(default_factory=list)
    pendings: list[tuple[str, int, int, int, bool]] = field(default_factory=list)
    transfers: list[tuple[str, int, int, int]] = field(default_factory=list)  # id, dr, cr, left

    def try_apply(self, changes: list[tuple[int, str, int, int]]) -> bool:
        """changes: (account, side, posted delta, pending delta); all or nothing."""
        trial = [Acc(a.type, a.pd, a.pc, a.qd, a.qc) for a in self.accounts]
        for i, side, posted, pending in changes:
            if side == "debit":
                trial[i].pd += posted
                trial[i].qd += pending
            else:
                trial[i].pc += posted
                trial[i].qc += pending
        if not trial[2].ok(flagged=True):
            return False
        self.accounts = trial
        return True


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops, probes=st.lists(st.integers(0, 45 * 24), min_size=1, max_size=4))
async def test_random_sequences_keep_every_invariant(
    client: httpx.AsyncClient, steps: list[tuple[Any, ...]], probes: list[int]
) -> None:
    tag = uuid.uuid4().hex[:8]
    codes = [f"p{tag}:{i}" for i in range(4)]
    for code, type_ in zip(codes, TYPES, strict=True):
        flags = {"debits_must_not_exceed_credits": True} if type_ == "liability" else {}
        await open_account(client, code, type_, flags=flags)
    model = Model()

    for step in steps:
        kind = step[0]
        if kind in ("transfer", "pending"):
            dr, cr, amount = step[1], step[2], step[3]
            pending = kind == "pending"
            at = NOW - timedelta(hours=step[4] * 24 + 1) if kind == "transfer" else None
            body = transfer(codes[dr], codes[cr], amount, pending=pending)
            if at is not None:
                body["effective_at"] = at.isoformat()
            resp = await client.post("/v1/transactions", json=body)
            p, q = (0, amount) if pending else (amount, 0)
            expected = model.try_apply([(dr, "debit", p, q), (cr, "credit", p, q)])
            assert resp.status_code == (201 if expected else 422), resp.text
            if expected:
                tx_id = resp.json()["id"]
                if pending:
                    model.pendings.append((tx_id, dr, cr, amount, True))
                else:
                    assert at is not None
                    model.entries += [(at, dr, "debit", amount), (at, cr, "credit", amount)]
                    model.transfers.append((tx_id, dr, cr, amount))
        elif kind in ("post", "void") and model.pendings:
            k = step[1] % len(model.pendings)
            tx_id, dr, cr, amount, open_ = model.pendings[k]
            if kind == "post":
                part = max(1, amount * step[2] // 100)
                resp = await client.post(f"/v1/transactions/{tx_id}/post", json={"amount": part})
            else:
                part = 0
                resp = await client.post(f"/v1/transactions/{tx_id}/void")
            if not open_:
                assert resp.status_code == 409
                continue
            assert resp.status_code == (201 if kind == "post" else 200), resp.text
            assert model.try_apply([(dr, "debit", part, -amount), (cr, "credit", part, -amount)])
            model.pendings[k] = (tx_id, dr, cr, amount, False)
            if part:
                at = datetime.fromisoformat(resp.json()["effective_at"])
                model.entries += [(at, dr, "debit", part), (at, cr, "credit", part)]
        elif kind == "reverse" and model.transfers:
            k = step[1] % len(model.transfers)
            tx_id, dr, cr, left = model.transfers[k]
            part = max(1, left * step[2] // 100) if left else 1
            resp = await client.post(f"/v1/transactions/{tx_id}/reverse", json={"amount": part})
            if left == 0 or part > left:
                assert resp.status_code in (409, 422)
                continue
            ok = model.try_apply([(dr, "credit", part, 0), (cr, "debit", part, 0)])
            assert resp.status_code == (201 if ok else 422), resp.text
            if ok:
                at = datetime.fromisoformat(resp.json()["effective_at"])
                model.entries += [(at, dr, "credit", part), (at, cr, "debit", part)]
                model.transfers[k] = (tx_id, dr, cr, left - part)

        for code, acc in zip(codes, model.accounts, strict=True):
            got = (await client.get(f"/v1/accounts/{code}/balances")).json()
            assert (got["posted"]["debits"], got["posted"]["credits"]) == (acc.pd, acc.pc)
            assert (got["pending"]["debits"], got["pending"]["credits"]) == (acc.qd, acc.qc)

    for hours in probes:
        at = NOW - timedelta(hours=hours) + timedelta(seconds=1)
        for i, code in enumerate(codes):
            debits = sum(a for t, j, s, a in model.entries if j == i and s == "debit" and t <= at)
            credits = sum(a for t, j, s, a in model.entries if j == i and s == "credit" and t <= at)
            got = await client.get(
                f"/v1/accounts/{code}/balances", params={"as_of": at.isoformat()}
            )
            assert got.json()["posted"]["balance"] == model.accounts[i].normal(debits, credits)

    # The verification queries see the uncommitted rows through the test's own connection.
    app = client.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:
        conn = await driver_connection(session)
        found = await verify_repo.verify_queries(conn)
    assert {name: list(rows) for name, rows in found.items() if rows} == {}
