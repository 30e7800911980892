"""Young tables get planner statistics as soon as they have doubled (not a minute later)."""

from __future__ import annotations

from sqlalchemy import text

from app.config import Settings
from app.main import create_app
from app.services import maintenance
from app.state import AppState
from tests.conftest import Servers, fresh_database, wait_for


async def analyze_young_tables(ctx: dict[str, AppState]) -> int:
    async with ctx["state"].sessions() as session:
        done = await maintenance.analyze_young_tables(session)
        await session.commit()
        return len(done)


async def _insert(state: AppState, rows: int, start: int) -> None:
    async with state.sessions() as session:
        await session.execute(
            text(
                "INSERT INTO young_things SELECT g FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g"
            ),
            {"a": start, "b": start + rows - 1},
        )
        await session.execute(text("SELECT pg_stat_force_next_flush()"))
        await session.commit()


async def _stats(state: AppState) -> tuple[float, int]:
    async with state.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT c.reltuples, s.n_mod_since_analyze FROM pg_class c"
                    " JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'young_things'"
                )
            )
        ).one()
        return float(row[0]), int(row[1])


async def test_a_table_is_analysed_when_it_has_doubled_since_its_statistics(
    settings: Settings, servers: Servers
) -> None:
    # A database of its own: no other process analyses it meanwhile.
    async with fresh_database(servers) as url:
        state = AppState.open(settings.model_copy(update={"database_url": url}))
        ctx = {"state": state}
        try:
            async with state.sessions() as session:
                await session.execute(text("CREATE TABLE young_things (id int)"))
                await session.commit()
            assert (await _stats(state))[0] == -1  # never analysed

            await analyze_young_tables(ctx)  # whatever the migrations filled, out of the way
            await _insert(state, 400, 0)  # under the floor of 500 changes: left to autovacuum
            assert await wait_for(lambda: _changes_at_least(state, 400), timeout=5)
            assert await analyze_young_tables(ctx) == 0
            assert (await _stats(state))[0] == -1

            await _insert(state, 200, 400)  # 600 changes on a table never analysed
            assert await wait_for(lambda: _changes_at_least(state, 600), timeout=5)
            assert await analyze_young_tables(ctx) == 1
            assert await _stats(state) == (600.0, 0)
            assert await analyze_young_tables(ctx) == 0  # nothing changed since

            await _insert(state, 550, 600)  # 550 changes on 600 rows: not doubled yet
            assert await wait_for(lambda: _changes_at_least(state, 550), timeout=5)
            assert await analyze_young_tables(ctx) == 0
            assert (await _stats(state))[0] == 600.0

            await _insert(state, 50, 1150)  # 600 changes on 600 rows: doubled
            assert await wait_for(lambda: _changes_at_least(state, 600), timeout=5)
            assert await analyze_young_tables(ctx) == 1
            assert await _stats(state) == (1200.0, 0)
            # The smaller sample: 1,200 distinct ids give a histogram of target + 1 bounds (the
            # server's default of 100 would give 101).
            async with state.sessions() as session:
                bounds = (
                    await session.execute(
                        text(
                            "SELECT cardinality(CAST(CAST(histogram_bounds AS text) AS int[]))"
                            " FROM pg_stats WHERE tablename = 'young_things' AND attname = 'id'"
                        )
                    )
                ).scalar_one()
            assert bounds == maintenance.STATISTICS_TARGET + 1
        finally:
            await state.close()


async def _changes_at_least(state: AppState, n: int) -> bool:
    return (await _stats(state))[1] >= n


async def test_each_api_process_keeps_statistics_fresh_in_the_background(
    settings: Settings, servers: Servers
) -> None:
    async with fresh_database(servers) as url:
        own = settings.model_copy(update={"database_url": url})
        state = AppState.open(own)
        app = create_app(own)  # no shared state: the app opens its own and runs the loop
        try:
            async with state.sessions() as session:
                await session.execute(text("CREATE TABLE young_things (id int)"))
                await session.commit()
            async with app.router.lifespan_context(app):
                await _insert(state, 700, 0)
                assert await wait_for(lambda: _analysed(state), timeout=10)
            assert await _stats(state) == (700.0, 0)
        finally:
            await state.close()


async def _analysed(state: AppState) -> bool:
    return (await _stats(state))[0] >= 0


async def test_a_big_table_is_analysed_after_enough_changes_once_its_statistics_are_old(
    settings: Settings, servers: Servers
) -> None:
    # What a new organisation in a big table needs: the rows changed since the last ANALYZE are
    # far from doubling the table, but many, and the statistics do not know them.
    async with fresh_database(servers) as url:
        state = AppState.open(settings.model_copy(update={"database_url": url}))
        try:
            async with state.sessions() as session:
                await session.execute(text("CREATE TABLE young_things (id int)"))
                await session.commit()
            await _insert(state, 2000, 0)
            assert await wait_for(lambda: _changes_at_least(state, 2000), timeout=5)
            async with state.sessions() as session:
                assert "young_things" in await maintenance.analyze_young_tables(session)
                await session.commit()
            await _insert(state, 1500, 2000)  # 1,500 changes on 2,000 rows: not doubled
            assert await wait_for(lambda: _changes_at_least(state, 1500), timeout=5)
            async with state.sessions() as session:
                # Statistics younger than min_age: left alone.
                assert await maintenance.analyze_young_tables(session, big_changes=1000, min_age=3600) == []
            async with state.sessions() as session:
                assert await maintenance.analyze_young_tables(session, big_changes=2000, min_age=0) == []
            async with state.sessions() as session:
                assert await maintenance.analyze_young_tables(session, big_changes=1000, min_age=0) == [
                    "young_things"
                ]
                await session.commit()
            assert await _stats(state) == (3500.0, 0)
        finally:
            await state.close()
