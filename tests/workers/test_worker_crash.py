"""A worker SIGKILLed in the middle of a run loses no job and assigns no lead twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import Servers, fresh_database, make_org, wait_for

LOUDOU = str(Path(sys.executable).parent / "loudou")


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "LOUDOU_QUEUE_NAME": settings.queue_name,
        "LOUDOU_LOG_FORMAT": "console",
    }
    with log.open("ab") as out:
        return subprocess.Popen([LOUDOU, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_sigkilled_worker_loses_nothing_and_assigns_once(
    settings: Settings, servers: Servers, tmp_path: Path
) -> None:
    async with fresh_database(servers) as database_url:
        own = settings.model_copy(
            update={"database_url": database_url, "queue_name": f"crash-{uuid.uuid4().hex[:6]}"}
        )
        state = AppState.open(own)
        first = _worker(own, tmp_path / "a.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            app = create_app(own, state=state)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                org = await make_org(state, client)
                reps = [(await org.add_user("rep"))[0] for _ in range(3)]
                r = await client.post(
                    "/v1/assignment-rules", json={"name": "RR", "target_user_ids": reps}, headers=org.auth()
                )
                assert r.status_code == 201
                await asyncio.sleep(1.5)  # the worker is up
                posted = await asyncio.gather(
                    *[
                        client.post("/v1/leads", json={"email": f"k{i}@example.com"}, headers=org.auth())
                        for i in range(30)
                    ]
                )
                lead_ids = [p.json()["id"] for p in posted]
                await asyncio.sleep(0.2)
                first.send_signal(signal.SIGKILL)
                first.wait()
                second = _worker(own, tmp_path / "b.log")

                async def all_owned() -> list[str] | None:
                    owners = []
                    for lead_id in lead_ids:
                        lead = (await client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
                        owners.append(lead["owner_id"])
                    return owners if all(owners) else None

                owners = await wait_for(all_owned, timeout=60, interval=0.5)
            assert Counter(owners) == {rep: 10 for rep in reps}
            async with state.engine.connect() as conn:
                from sqlalchemy import text

                rows = (
                    await conn.execute(
                        text("SELECT lead_id, count(*) FROM assignment_decisions GROUP BY lead_id")
                    )
                ).all()
            assert len(rows) == 30 and all(count == 1 for _, count in rows)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=20)
            await state.close()
