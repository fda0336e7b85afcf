"""Traffic through cluster Services and CoreDNS: an enrollment on a priced cohort goes
enrollment -> pricing -> ledger and ends `enrolled` with its charge in the ledger; a chat
completion through the orchestrator Service reaches a backend pod."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.cluster.conftest import NAMESPACE, Cluster, Release, eventually

COHORT = "default/k8s-fundamentals-2027-spring"  # examples/enrollmentcohort.yaml, priced
PRICE = 49_900  # minor units, EUR


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def enroll(
    http: httpx.Client, release: Release, student: str, cohort: str = COHORT
) -> dict[str, Any]:
    response = http.post(
        f"{release.urls['enrollment']}/v1/enrollments",
        json={"cohort": cohort, "student": {"id": student, "segment": "professional"}},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def ledger_transactions(http: httpx.Client, release: Release, enrollment_id: str) -> list[Any]:
    response = http.get(
        f"{release.urls['ledger']}/v1/transactions",
        params={"reference": f"enrollment:{enrollment_id}"},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def assert_charged_once(http: httpx.Client, release: Release, enrollment_id: str) -> None:
    state = http.get(f"{release.urls['enrollment']}/v1/enrollments/{enrollment_id}").json()
    assert state["state"] == "enrolled", state
    transactions = ledger_transactions(http, release, enrollment_id)
    assert len(transactions) == 1, transactions
    assert state["payment"]["transaction_id"] == transactions[0]["id"]
    amounts = {p["amount"] for p in transactions[0]["postings"]}
    assert amounts == {PRICE}, transactions[0]


def test_priced_enrollment_is_charged_through_the_cluster(release: Release, priced: None) -> None:
    with httpx.Client(headers=bearer(release.tokens["client-token"]), timeout=10) as http:
        created = enroll(http, release, f"student-{uuid.uuid4().hex[:8]}")
        assert created["state"] in ("pending_payment", "enrolled"), created

        def enrolled() -> bool:
            url = f"{release.urls['enrollment']}/v1/enrollments/{created['id']}"
            return bool(http.get(url).json()["state"] == "enrolled")

        eventually(enrolled, "the enrollment charged through pricing and the ledger", 60)
        assert_charged_once(http, release, created["id"])


# A tiny OpenAI-compatible backend, run by the orchestrator image's Python: answers with the
# name of the pod that served the request.
ECHO_SERVER = """
import json, os, socket, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        self._send({
            "id": "chatcmpl-echo", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model", "echo"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant",
                                     "content": "served by " + socket.gethostname()}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        })

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


def echo_backend_manifest() -> list[dict[str, Any]]:
    labels = {"app": "echo-llm"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo-llm", "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "echo",
                                "image": "localhost/azora/ai-orchestrator:dev",
                                "imagePullPolicy": "Never",
                                "command": ["python3", "-c", ECHO_SERVER],
                                "ports": [{"containerPort": 8080}],
                                "readinessProbe": {
                                    "tcpSocket": {"port": 8080},
                                    "periodSeconds": 1,
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo-llm", "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "azora.io/v1alpha1",
            "kind": "AIModelRoute",
            "metadata": {"name": "cluster-echo", "namespace": NAMESPACE},
            "spec": {
                "model": "cluster-echo",
                "backends": [
                    {
                        "name": "echo",
                        # Resolved by CoreDNS, routed by kube-proxy.
                        "url": f"http://echo-llm.{NAMESPACE}.svc.cluster.local/v1",
                        "model": "echo",
                    }
                ],
            },
        },
    ]


def deploy_echo_backend(cluster: Cluster) -> set[str]:
    """The echo backend and its AIModelRoute; returns the backend pods' names."""
    cluster.kubectl(
        "apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in echo_backend_manifest())
    )
    cluster.kubectl(
        "-n", NAMESPACE, "rollout", "status", "deployment/echo-llm", "--timeout=90s", timeout=120
    )
    return {
        p.metadata.name
        for p in cluster.core.list_namespaced_pod(NAMESPACE, label_selector="app=echo-llm").items
    }


def test_chat_completion_reaches_a_backend_pod(
    cluster: Cluster, release: Release, echo_backend: set[str]
) -> None:
    backend_pods = echo_backend
    url = f"{release.urls['orchestrator']}/v1/chat/completions"
    body = {"model": "cluster-echo", "messages": [{"role": "user", "content": "hello"}]}
    last: list[str] = []
    with httpx.Client(headers=bearer(release.tokens["client-token"]), timeout=30) as http:

        def answered() -> dict[str, Any] | None:
            # Until the operator has configured the route, the model is unknown (404).
            response = http.post(url, json=body)
            last[:] = [f"{response.status_code} {response.text[:300]}"]
            return dict(response.json()) if response.status_code == 200 else None

        try:
            completion = eventually(answered, "a completion through the orchestrator", 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {last}") from None
    content = completion["choices"][0]["message"]["content"]
    assert content.startswith("served by ")
    assert content.removeprefix("served by ") in backend_pods
    # A route whose backend a pod can reach is Ready (healthy backends), not only Synced.
    from tests.cluster.test_2_operator import ready

    eventually(lambda: ready(cluster, "aimodelroutes", NAMESPACE, "cluster-echo"), "route Ready")
