"""``make demo``: a guided tour of the running platform, every step real.

Run after ``make up`` (it reads ``.local/azora.env``, or ``$AZORA_LOCAL_DIR/azora.env``). It
talks to the platform the way a user would, with the official clients only: ``kubectl`` for
the custom resources, ``httpx`` for the REST APIs, the ``openai`` package for the gateway.

1. apply a cohort (two seats, a waitlist) and wait until the operator reports it Ready;
2. enroll three students: two take the seats and are charged, the third is waitlisted;
3. a quote with the example promotion code EARLYBIRD;
4. a charge in the ledger, and the trial balance;
5. a student drops (the charge is reversed) and the waitlisted one is promoted and charged;
6. a chat completion and an embedding through the gateway;
7. the embedding route's weights changed with ``kubectl patch``, the split read from each model
   backend's ``/metrics``; the example weights (3:1) are put back at the end.

Each run uses a cohort and students of its own (``demo-<run id>``), so it can run again and
again. A step whose outcome is not what it says fails the tour (exit status 1);
``--report FILE`` writes every step's outcome as JSON (tests/demo checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
COHORT_TEMPLATE = ROOT / "examples" / "demo" / "cohort.yaml"
NAMESPACE = "default"
EMBED_ROUTE = "embeddings"  # examples/aimodelroute.yaml: azora-embed over model-a, model-b
EXAMPLE_WEIGHTS = (3, 1)
SPLIT_REQUESTS = 8  # two full rounds of 3:1, so the split is exact (smooth weighted round robin)


class TourFailed(RuntimeError):
    """A step did not end the way the tour says it does."""


def load_env(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines of ``azora.env`` (``$PATH`` expanded), over os.environ."""
    if not path.exists():
        raise TourFailed(f"{path} not found: run `make up` first")
    env = dict(os.environ)
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"export ([A-Z_][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            value = match.group(2).strip('"').replace("$PATH", env.get("PATH", ""))
            env[match.group(1)] = value
    return env


class Tour:
    def __init__(self, env: dict[str, str], run_id: str) -> None:
        self.env = env
        self.run_id = run_id
        self.cohort = f"demo-{run_id}"
        self.report: dict[str, Any] = {"run_id": run_id, "steps": {}}
        self.step_no = 0
        kubectl = shutil.which("kubectl", path=env.get("PATH"))
        if kubectl is None:
            raise TourFailed("kubectl not on PATH: `make tools` builds it, azora.env adds it")
        self.kubectl_bin = kubectl
        self.api = httpx.Client(
            headers={"Authorization": f"Bearer {env['AZORA_API_TOKEN']}"}, timeout=30.0
        )
        self.admin = httpx.Client(
            headers={"Authorization": f"Bearer {env['AZORA_ADMIN_TOKEN']}"}, timeout=30.0
        )
        self.gateway = OpenAI(
            base_url=f"{env['AZORA_ORCHESTRATOR_URL']}/v1",
            api_key=env["AZORA_API_TOKEN"],
            timeout=120.0,
            max_retries=0,
        )
        self.backends = {
            "model-a": env["AZORA_MODEL_A_URL"].removesuffix("/v1"),
            "model-b": env["AZORA_MODEL_B_URL"].removesuffix("/v1"),
        }

    # -- plumbing -----------------------------------------------------------------------------

    def url(self, service: str, path: str) -> str:
        return self.env[f"AZORA_{service.upper()}_URL"] + path

    def kubectl(self, *args: str, stdin: str | None = None, quiet: bool = False) -> str:
        shown = " ".join(args)
        if not quiet:
            print(f"   $ kubectl {shown}")
        result = subprocess.run(
            [self.kubectl_bin, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=90,
            check=False,
        )
        if result.returncode != 0:
            raise TourFailed(f"kubectl {shown}: {result.stderr.strip()}")
        return result.stdout

    def call(self, client: httpx.Client, method: str, url: str, **kw: Any) -> Any:
        response = client.request(method, url, **kw)
        if response.status_code >= 400:
            raise TourFailed(f"{method} {url}: {response.status_code} {response.text[:400]}")
        return response.json() if response.content else None

    def step(self, key: str, title: str, fn: Callable[[], dict[str, Any]]) -> None:
        self.step_no += 1
        print(f"\n== {self.step_no}. {title}")
        started = time.monotonic()
        outcome = fn()
        seconds = round(time.monotonic() - started, 2)
        print(f"   ({seconds} s)")
        self.report["steps"][key] = outcome | {"title": title, "seconds": seconds}

    @staticmethod
    def show(text: str) -> None:
        print(textwrap.indent(text.rstrip(), "   | "))

    @staticmethod
    def money(amount: int, currency: str) -> str:
        return f"{amount / 100:,.2f} {currency}"

    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout: float = 30.0, every: float = 0.2
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TourFailed(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)

    def enrollment(self, enrollment_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.call(
            self.api, "GET", self.url("enrollment", f"/v1/enrollments/{enrollment_id}")
        )
        return doc

    def wait_state(self, enrollment_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            doc = self.enrollment(enrollment_id)
            return doc if doc["state"] == state else None

        found: dict[str, Any] = self.wait_for(f"enrollment {enrollment_id} {state}", probe, timeout)
        return found

    # -- the steps ----------------------------------------------------------------------------

    def apply_cohort(self) -> dict[str, Any]:
        doc = yaml.safe_load(COHORT_TEMPLATE.read_text())
        doc["metadata"]["name"] = self.cohort
        print(f"   {COHORT_TEMPLATE.relative_to(ROOT)} as {NAMESPACE}/{self.cohort}:")
        print(f"   capacity {doc['spec']['capacity']}, waitlist {doc['spec']['waitlist']['mode']}")
        self.show(self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc)))
        self.kubectl(
            "wait", "--for=condition=Ready", "--timeout=30s",
            f"enrollmentcohort/{self.cohort}", "-n", NAMESPACE,
        )  # fmt: skip
        self.show(self.kubectl("get", "enrollmentcohort", self.cohort, "-n", NAMESPACE))
        return {"cohort": f"{NAMESPACE}/{self.cohort}", "ready": True}

    def enroll_three(self) -> dict[str, Any]:
        self.students: dict[str, str] = {}
        states = {}
        for name in ("ana", "ben", "cy"):
            student = f"{name}-{self.run_id}"
            doc = self.call(
                self.api,
                "POST",
                self.url("enrollment", "/v1/enrollments"),
                json={
                    "cohort": f"{NAMESPACE}/{self.cohort}",
                    "student": {"id": student, "segment": "student"},
                },
                headers={"Idempotency-Key": f"demo-{self.run_id}-{name}"},
            )
            self.students[name] = doc["id"]
            position = doc.get("waitlist_position")
            extra = f" (waitlist position {position})" if position else ""
            print(f"   POST /v1/enrollments {student}: {doc['state']}{extra}")
            states[name] = {"first": doc["state"], "waitlist_position": position}
        print("   the payment outbox quotes, accepts and posts each charge ...")
        for name in ("ana", "ben"):
            doc = self.wait_state(self.students[name], "enrolled")
            pay = doc["payment"]
            print(
                f"   {name}: enrolled, charged {self.money(pay['amount'], pay['currency'])} "
                f"(ledger transaction {pay['transaction_id']})"
            )
            states[name]["final"] = doc["state"]
            states[name]["charge"] = pay["amount"]
        cy = self.enrollment(self.students["cy"])
        states["cy"]["final"] = cy["state"]
        print(f"   cy: {cy['state']}, position {cy['waitlist_position']}")
        if cy["state"] != "waitlisted":
            raise TourFailed(f"the third student should be waitlisted, is {cy['state']}")
        return {"students": states, "cohort": self.cohort_view()}

    def cohort_view(self) -> dict[str, Any]:
        view: dict[str, Any] = self.call(
            self.api, "GET", self.url("enrollment", f"/v1/cohorts/{NAMESPACE}/{self.cohort}")
        )
        print(
            f"   GET /v1/cohorts/{NAMESPACE}/{self.cohort}: seats {view['seats_taken']}/"
            f"{view['capacity']}, waitlisted {view['waitlisted']}"
        )
        return {k: view[k] for k in ("seats_taken", "capacity", "waitlisted")}

    def quote_with_promotion(self) -> dict[str, Any]:
        body = {
            "currency": "EUR",
            "customer": {"id": f"cy-{self.run_id}", "segment": "student"},
            "lines": [{"product": "k8s-fundamentals", "quantity": 1}],
            "codes": ["EARLYBIRD"],
        }
        print(f"   POST /v1/quotes {json.dumps(body)}")
        quote = self.call(self.api, "POST", self.url("pricing", "/v1/quotes"), json=body)
        line = quote["lines"][0]
        print(f"   base    {self.money(line['base']['amount'], 'EUR')}  ({line['base']['detail']})")
        for adj in line["adjustments"]:
            print(f"   {adj['rule']}: {self.money(adj['amount'], 'EUR')}  {adj['why']}")
        print(f"   total   {self.money(quote['total'], 'EUR')}  codes: {quote['codes']}")
        applied = [c["code"] for c in quote["codes"] if c["applied"]]
        if applied != ["EARLYBIRD"]:
            raise TourFailed(f"EARLYBIRD not applied: {quote['codes']}")
        return {
            "subtotal": quote["subtotal"],
            "discount": quote["discount_total"],
            "total": quote["total"],
            "applied": applied,
        }

    def ledger(self) -> dict[str, Any]:
        ana = self.enrollment(self.students["ana"])
        tx = self.call(
            self.api,
            "GET",
            self.url("ledger", f"/v1/transactions/{ana['payment']['transaction_id']}"),
        )
        print(f"   GET /v1/transactions/{tx['id']}  ({tx['reference']}, {tx['category']})")
        for p in tx["postings"]:
            amount = self.money(p["amount"], p["currency"])
            print(f"     {p['direction']:<6} {p['account']:<58} {amount}")
        trial = self.trial_balance()
        return {
            "transaction": {"category": tx["category"], "postings": tx["postings"]},
            "trial_balance": trial,
        }

    def trial_balance(self, rows: bool = True) -> dict[str, Any]:
        report = self.call(
            self.api,
            "GET",
            self.url("ledger", "/v1/reports/trial-balance"),
            params={"currency": "EUR"},
        )
        print("   GET /v1/reports/trial-balance?currency=EUR")
        for row in report["rows"] if rows else []:
            debit, credit = self.money(row["debit"], "EUR"), self.money(row["credit"], "EUR")
            print(f"     {row['account']:<58} Dr {debit:>14}  Cr {credit:>14}")
        for total in report["totals"]:
            print(
                f"     {'total':<58} Dr {self.money(total['debit'], 'EUR'):>14}  "
                f"Cr {self.money(total['credit'], 'EUR'):>14}  balanced: {total['balanced']}"
            )
        totals: dict[str, Any] = report["totals"][0]
        if not totals["balanced"]:
            raise TourFailed(f"the trial balance does not balance: {totals}")
        return totals

    def drop_and_promote(self) -> dict[str, Any]:
        ana_id = self.students["ana"]
        doc = self.call(
            self.api,
            "POST",
            self.url("enrollment", f"/v1/enrollments/{ana_id}/transitions"),
            json={"to": "dropped", "reason": "demo: changed plans"},
        )
        print(f"   POST /v1/enrollments/<ana>/transitions {{'to': 'dropped'}}: {doc['state']}")
        cy = self.wait_state(self.students["cy"], "enrolled")
        pay = cy["payment"]
        print(
            f"   cy: waitlisted -> {cy['state']}, charged {self.money(pay['amount'], 'EUR')} "
            f"(ledger transaction {pay['transaction_id']})"
        )

        def refunded() -> str | None:
            ref: str | None = self.enrollment(ana_id)["payment"]["refund_transaction_id"]
            return ref

        refund = self.wait_for("ana's refund", refunded)
        print(f"   ana: dropped inside the refund window, charge reversed by {refund}")
        history = self.call(
            self.api,
            "GET",
            self.url("enrollment", f"/v1/enrollments/{self.students['cy']}/history"),
        )
        print("   GET /v1/enrollments/<cy>/history")
        for h in history["items"]:
            print(f"     {h.get('from_state') or '(new)'} -> {h['to_state']}: {h.get('reason')}")
        view = self.cohort_view()
        account = f"revenue:enrollment:{NAMESPACE}:{self.cohort}"
        statement = self.call(
            self.api, "GET", self.url("ledger", f"/v1/accounts/{account}/statement")
        )
        print(f"   GET /v1/accounts/{account}/statement")
        for item in statement["items"]:
            amount = self.money(item["amount"], item["currency"])
            balance = self.money(item["balance"]["balance"], item["currency"])
            print(
                f"     {item['kind']:<9} {item['direction']:<6} {amount:>12}  "
                f"balance {balance:>12}  {item['description']}"
            )
        kinds = [[i["kind"], i["direction"]] for i in statement["items"]]
        # The operator's copy of the live figures (status.enrolled, status.waitlisted).
        self.show(self.kubectl("get", "enrollmentcohort", self.cohort, "-n", NAMESPACE))
        return {
            "dropped": doc["state"],
            "promoted": cy["state"],
            "refund_transaction": refund,
            "cohort": view,
            "revenue_statement": kinds,
            "revenue_balance": statement["items"][-1]["balance"]["balance"],
            "trial_balance": self.trial_balance(rows=False),
        }

    def gateway_calls(self) -> dict[str, Any]:
        print(f"   OpenAI(base_url={self.gateway.base_url!s})")
        chat = self.gateway.chat.completions.create(
            model="azora-tutor",
            messages=[{"role": "user", "content": "What is a Kubernetes pod? One sentence."}],
            max_tokens=16,
            temperature=0,
        )
        text = chat.choices[0].message.content or ""
        usage = chat.usage
        assert usage is not None
        print(f"   chat.completions (azora-tutor): {text!r}")
        print(
            f"     served by {chat.system_fingerprint}, model {chat.model}, "
            f"usage {usage.prompt_tokens}+{usage.completion_tokens} tokens"
        )
        emb = self.gateway.embeddings.create(
            model="azora-embed", input=["Kubernetes schedules pods onto nodes."]
        )
        vector = emb.data[0].embedding
        print(
            f"   embeddings (azora-embed): {len(vector)} dimensions, "
            f"[{', '.join(f'{v:.3f}' for v in vector[:4])}, ...], {emb.usage.prompt_tokens} tokens"
        )
        return {
            "chat": {"text": text, "completion_tokens": usage.completion_tokens},
            "embedding_dimensions": len(vector),
        }

    def backend_counts(self) -> dict[str, float]:
        counts = {}
        for name, base in self.backends.items():
            text = httpx.get(f"{base}/metrics", timeout=10).text
            counts[name] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("azora_model_backend_requests_total{")
                and 'endpoint="embeddings"' in line
            )
        return counts

    def split(self, label: str) -> dict[str, int]:
        before = self.backend_counts()
        for i in range(SPLIT_REQUESTS):
            self.gateway.embeddings.create(model="azora-embed", input=[f"request {i}"])
        after = self.backend_counts()
        got = {name: int(after[name] - before[name]) for name in after}
        print(
            f"   {SPLIT_REQUESTS} embeddings at {label}: "
            + ", ".join(f"{name} {n}" for name, n in got.items())
            + '   (azora_model_backend_requests_total{endpoint="embeddings"} of each backend)'
        )
        return got

    def set_weights(self, weights: tuple[int, int]) -> None:
        patch = [
            {"op": "replace", "path": f"/spec/backends/{i}/weight", "value": w}
            for i, w in enumerate(weights)
        ]
        self.kubectl(
            "patch", "aimodelroute", EMBED_ROUTE, "-n", NAMESPACE, "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip
        generation = int(
            self.kubectl(
                "get", "aimodelroute", EMBED_ROUTE, "-n", NAMESPACE,
                "-o", "jsonpath={.metadata.generation}", quiet=True,
            )
        )  # fmt: skip
        status_url = self.url("orchestrator", f"/admin/v1/routes/{NAMESPACE}/{EMBED_ROUTE}/status")

        def live() -> bool:
            # The operator PUTs the new generation; the gateway's snapshot swaps on NOTIFY.
            status = self.admin.get(status_url).json()
            return bool(status.get("generation") == generation and status.get("ready"))

        self.wait_for(f"generation {generation} of {EMBED_ROUTE} live in the gateway", live)
        print(f"   generation {generation} is live in the gateway")

    def weights(self) -> dict[str, Any]:
        splits = {"3:1": self.split("3:1 (examples/aimodelroute.yaml)")}
        try:
            for weights in ((1, 1), (0, 1)):
                label = f"{weights[0]}:{weights[1]}"
                self.set_weights(weights)
                splits[label] = self.split(label)
        finally:
            print("   back to the example's 3:1")
            self.set_weights(EXAMPLE_WEIGHTS)
        self.show(self.kubectl("get", "aimodelroute", EMBED_ROUTE, "-n", NAMESPACE))
        expected = {"3:1": (6, 2), "1:1": (4, 4), "0:1": (0, 8)}
        for label, (a, b) in expected.items():
            if (splits[label]["model-a"], splits[label]["model-b"]) != (a, b):
                raise TourFailed(f"split at {label} was {splits[label]}, expected {a}:{b}")
        return {"splits": splits}

    def run(self) -> None:
        self.step("cohort", "Apply a cohort with kubectl", self.apply_cohort)
        self.step("enroll", "Enroll three students (two seats)", self.enroll_three)
        self.step("quote", "A quote with the promotion code EARLYBIRD", self.quote_with_promotion)
        self.step("ledger", "The charge in the ledger, and the trial balance", self.ledger)
        self.step(
            "promote", "A student drops; the waitlisted one is promoted", self.drop_and_promote
        )
        self.step(
            "gateway", "Chat and embeddings through the gateway (openai client)", self.gateway_calls
        )
        self.step(
            "weights", "Route weights changed with kubectl; the split in /metrics", self.weights
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/demo.py", description="A tour of Azora.")
    default_env = Path(os.environ.get("AZORA_LOCAL_DIR", ROOT / ".local")) / "azora.env"
    parser.add_argument("--env-file", type=Path, default=default_env)
    parser.add_argument("--report", type=Path, help="write each step's outcome as JSON here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        tour = Tour(load_env(args.env_file), run_id=uuid.uuid4().hex[:8])
        try:
            tour.run()
        finally:
            tour.report["seconds"] = round(time.monotonic() - started, 2)
            if args.report is not None:
                args.report.write_text(json.dumps(tour.report, indent=2))
    except (TourFailed, httpx.HTTPError) as exc:
        print(f"\nthe tour stopped: {exc}", file=sys.stderr)
        return 1
    print(f"\nThe tour took {time.monotonic() - started:.1f} s. Next: README.md, docs/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
