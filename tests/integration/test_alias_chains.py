"""Alias chains through the real store (SQLite and PostgreSQL): every id merged into a
person keeps pointing at them across batches, so no duplicate profile appears."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import basic, bearer


async def post(client: Any, payload: Any) -> None:
    response = await client.post("/v1/segment", data=json.dumps(payload),
                                 headers={"Content-Type": "application/json", **basic()})
    assert response.status == 200, await response.text()


async def user(client: Any, user_id: str) -> tuple[int, Any]:
    response = await client.get(f"/v1/users/{user_id}", headers=bearer())
    return response.status, await response.json()


def call(kind: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": f"chain-{n}",
            "timestamp": f"2025-01-01T00:0{n}:00Z", **fields}


async def test_aliasing_a_merged_id_again_moves_every_id_to_the_person(make_client: Any) -> None:
    client = await make_client()
    await post(client, call("identify", 1, userId="A", traits={"plan": "free"}))
    await post(client, call("page", 2, userId="B"))
    await post(client, call("alias", 3, userId="B", previousId="A"))  # A is B
    await post(client, call("alias", 4, userId="C", previousId="A"))  # A, so B, is C
    # In a later batch, a call under B lands on C instead of starting a new profile.
    await post(client, call("identify", 5, userId="B", traits={"email": "c@x.io"}))
    status, body = await user(client, "C")
    assert status == 200
    assert body["traits"] == {"plan": "free", "email": "c@x.io"}
    assert sorted(body["aliases"]) == ["A", "B"]
    assert body["activity"]["events"] == 1
    assert (await user(client, "B"))[1]["userId"] == "C"
