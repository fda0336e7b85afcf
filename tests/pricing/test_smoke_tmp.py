from tests.pricing.conftest import ADMIN


async def test_smoke(client):
    r = await client.put(
        "/v1/products/course-ai",
        json={
            "name": "AI",
            "labels": ["course"],
            "prices": {"EUR": {"model": "perUnit", "unitAmount": 999}},
        },
    )
    print(r.status_code, r.json())
    r = await client.put(
        "/admin/v1/pricing-rules/default/student",
        headers=ADMIN,
        json={
            "generation": 1,
            "uid": "u",
            "spec": {
                "target": {"segments": ["student"]},
                "action": {"percentOff": "15"},
                "promotion": {"code": "WELCOME", "maxRedemptions": 2},
            },
        },
    )
    print(r.status_code, r.json())
    r = await client.post(
        "/v1/quotes",
        json={
            "currency": "EUR",
            "customer": {"id": "c1", "segment": "student"},
            "lines": [{"product": "course-ai", "quantity": 2}],
            "codes": ["welcome"],
        },
    )
    print(r.status_code, r.json())
    qid = r.json()["id"]
    r = await client.post(f"/v1/quotes/{qid}/accept", headers={"Idempotency-Key": "k1"})
    print(r.status_code, r.json())
    r = await client.get(f"/admin/v1/pricing-rules/default/student/status", headers=ADMIN)
    print(r.status_code, r.json())
    assert 0
