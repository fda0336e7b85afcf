"""The mixed workload of the fault suite: four client threads, each doing what a real client
does, paced so the whole run stays bounded.

* ledger transfers, each with an ``Idempotency-Key`` and a unique ``reference``;
* enrollments into the two priced cohorts, each with an ``Idempotency-Key``;
* quotes for the promoted course with the code ``EARLYBIRD``, then their accept (both keyed);
* chat completions through the gateway.

A client retries on a connection error or a 5xx with the same key (backoff 0.1 → 1 s) until it
gets an answer or its patience (``PATIENCE`` s) runs out; every attempt is recorded with its
wall-clock interval, so the checks can tell when errors happened.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from tests.support.services import API_TOKEN

PATIENCE = 120.0
CURRENCY = "EUR"
PROMO = "EARLYBIRD"
PRODUCT = "k8s-fundamentals"
# The two accounts the transfers move money between (created by the suite).
DEBIT, CREDIT = "faults:cash", "faults:sales"


@dataclass
class Attempt:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection refused/reset, timeout)
    error: str = ""


@dataclass
class Op:
    kind: str
    key: str
    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    status: int | None = None  # the final answer's status (None: never answered)
    result: Any = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def decided(self) -> bool:
        """The service decided (a 2xx, or 409: a full cohort refusing is a working service)."""
        return self.accepted or self.status == 409

    @property
    def done_at(self) -> float | None:
        return self.attempts[-1].ended if self.accepted else None


class Workload:
    def __init__(self, urls: dict[str, str], cohorts: list[str]) -> None:
        self.urls = urls
        self.cohorts = cohorts
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Caps well above what a 4-minute run reaches at this pace: the pace bounds the load,
        # the caps only bound a run that hangs.
        self.limits = {"transfer": 2000, "enrollment": 600, "quote": 95, "chat": 5000}
        self.pause = {"transfer": 0.15, "enrollment": 0.4, "quote": 1.5, "chat": 0.1}

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        for kind in ("transfer", "enrollment", "quote", "chat"):
            thread = threading.Thread(target=self._loop, args=(kind,), name=kind, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(PATIENCE + 10)

    def _loop(self, kind: str) -> None:
        with httpx.Client(
            timeout=httpx.Timeout(10.0, connect=2.0),
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as http:
            count = 0
            while not self._stop.is_set() and count < self.limits[kind]:
                getattr(self, f"_{kind}")(http, count)
                count += 1
                self._stop.wait(self.pause[kind])

    def _record(self, op: Op) -> Op:
        with self._lock:
            self.ops.append(op)
        return op

    def call(
        self, http: httpx.Client, kind: str, method: str, url: str, body: Any, key: str | None
    ) -> Op:
        op = self._record(Op(kind, key or "", body))
        headers = {"Idempotency-Key": key} if key else {}
        deadline = time.monotonic() + PATIENCE
        delay = 0.1
        while True:
            started = time.time()
            try:
                resp = http.request(method, url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                with self._lock:
                    op.attempts.append(Attempt(started, time.time(), None, type(exc).__name__))
            else:
                try:
                    result: Any = resp.json()
                except ValueError:
                    result = resp.text
                # Under the lock: a snapshot sees an attempt and its answer together or not at all.
                with self._lock:
                    op.attempts.append(Attempt(started, time.time(), resp.status_code))
                    if resp.status_code < 500:
                        op.status, op.result = resp.status_code, result
                if resp.status_code < 500:
                    return op
            if time.monotonic() > deadline:
                return op
            # A real client backs off; with the same key its retry cannot apply twice.
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- the four clients --------------------------------------------------------------------

    def _transfer(self, http: httpx.Client, n: int) -> None:
        key = f"transfer-{uuid.uuid4()}"
        amount = 1 + n % 97
        body = {
            "postings": [
                {"account": DEBIT, "direction": "debit", "amount": amount, "currency": CURRENCY},
                {"account": CREDIT, "direction": "credit", "amount": amount, "currency": CURRENCY},
            ],
            "reference": key,
            "description": "fault suite transfer",
        }
        self.call(http, "transfer", "POST", f"{self.urls['ledger']}/v1/transactions", body, key)

    def _enrollment(self, http: httpx.Client, n: int) -> None:
        body = {
            "cohort": self.cohorts[n % len(self.cohorts)],
            "student": {"id": f"student-{uuid.uuid4().hex[:12]}", "segment": "student"},
        }
        key = f"enroll-{uuid.uuid4()}"
        self.call(
            http, "enrollment", "POST", f"{self.urls['enrollment']}/v1/enrollments", body, key
        )

    def _quote(self, http: httpx.Client, n: int) -> None:
        body = {
            "currency": CURRENCY,
            "customer": {"id": f"customer-{uuid.uuid4().hex[:12]}", "segment": "student"},
            "lines": [{"product": PRODUCT, "quantity": 1}],
            "codes": [PROMO],
        }
        pricing = self.urls["pricing"]
        quote = self.call(http, "quote", "POST", f"{pricing}/v1/quotes", body, f"q-{uuid.uuid4()}")
        if quote.accepted and isinstance(quote.result, dict):
            quote_id = quote.result["id"]
            self.call(
                http,
                "accept",
                "POST",
                f"{pricing}/v1/quotes/{quote_id}/accept",
                None,
                f"accept-{quote_id}",
            )

    def _chat(self, http: httpx.Client, n: int) -> None:
        body = {
            "model": "azora-tutor",
            "messages": [{"role": "user", "content": f"question {n}"}],
            "max_tokens": 4,
        }
        # No key: a completion has no effect to deduplicate; the retry is the client's.
        self.call(
            http, "chat", "POST", f"{self.urls['orchestrator']}/v1/chat/completions", body, None
        )

    # -- reading the record ------------------------------------------------------------------

    def snapshot(self, kind: str | None = None) -> list[Op]:
        """The record as it is now: copies, so an answer arriving while a check reads the
        services does not change what the check compares against (an op answered after the
        snapshot is still "in flight" in it)."""
        with self._lock:
            return [
                replace(op, attempts=list(op.attempts))
                for op in self.ops
                if kind is None or op.kind == kind
            ]

    def first_success_after(self, kinds: set[str], t0: float) -> float | None:
        """The end of the first decided attempt that started after ``t0`` (wall clock)."""
        best: float | None = None
        for op in self.snapshot():
            if op.kind not in kinds or not op.attempts:
                continue
            last = op.attempts[-1]
            if op.decided and last.started >= t0 and (best is None or last.ended < best):
                best = last.ended
        return best

    def wait_success_after(self, kinds: set[str], t0: float, timeout: float = 90.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_success_after(kinds, t0)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no successful {kinds} within {timeout}s of the fault")
