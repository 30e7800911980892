"""Writing a planned page, in constant memory, however many rows it holds.

PostgreSQL writes NDJSON and CSV itself (`COPY (SELECT …) TO STDOUT`), and the bytes are passed
on in chunks of about 256 KiB through a small bounded queue, so a slow client slows the COPY down
instead of filling memory. NDJSON rows are `row_to_json` text, copied as CSV with a delimiter and
a quote character that JSON text never holds raw (PostgreSQL escapes control characters in JSON),
so each row comes out as one line, unquoted. Parquet is built from CSV batches of BATCH_ROWS
rows (one statement compiled once, run from each batch's end), each parsed by pyarrow into one
row group and sent before the next batch is read; Arrow's pool gives the batch's memory back.
A page without tombstones (one index probe) is read from the entity's table alone.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from app.services.export.query import (
    PageBounds,
    Position,
    Template,
    after_values,
    compile_for_driver,
    ndjson_statement,
    rows_statement,
    tombstones_statement,
)
from app.services.export.registry import TRAILING_COLUMNS, arrow_type
from app.services.export.service import ExportFormat, PagePlan

CHUNK_BYTES = 256 * 1024
QUEUE_CHUNKS = 4
BATCH_ROWS = 10_000
NDJSON_COPY = {"format": "csv", "delimiter": "\x02", "quote": "\x01"}
CSV_COPY = {"format": "csv", "header": True}
_DONE = b""


def arrow_schema(plan: PagePlan) -> Any:
    """Every published column with its Arrow type."""
    import pyarrow as pa  # loaded on the first Parquet page, not with the app

    return pa.schema([pa.field(c.name, arrow_type(c)) for c in (*plan.entity.columns, *TRAILING_COLUMNS)])


class _Sink(io.RawIOBase):
    """Where the Parquet writer writes; drained after every row group."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


async def _copy_chunks(conn: Any, sql: str, args: list[Any], options: dict[str, Any]) -> AsyncIterator[bytes]:
    """The output of `COPY (sql) TO STDOUT` in chunks of about CHUNK_BYTES, with backpressure."""
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
    pending = bytearray()

    async def sink(data: bytes) -> None:
        pending.extend(data)
        if len(pending) >= CHUNK_BYTES:
            await queue.put(bytes(pending))
            pending.clear()

    async def produce() -> None:
        try:
            await conn.copy_from_query(sql, *args, output=sink, **options)
            if pending:
                await queue.put(bytes(pending))
        finally:
            await queue.put(_DONE)

    task = asyncio.create_task(produce())
    try:
        while (chunk := await queue.get()) is not _DONE:
            yield chunk
        await task  # raises what the COPY raised
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _json_page(plan: PagePlan) -> tuple[bytes, Callable[[bytes], bytes], Callable[[], bytes]]:
    """NDJSON lines to the body of `{"next_cursor", "has_more", "data": [...]}`: every newline
    becomes a comma, and the last one is dropped at the end."""
    more = "true" if plan.has_more else "false"
    head = f'{{"next_cursor":"{plan.next_position.token}","has_more":{more},"data":['.encode()
    held = bytearray()

    def convert(chunk: bytes) -> bytes:
        held.extend(chunk.replace(b"\n", b","))
        out = bytes(held[:-1])
        del held[:-1]
        return out

    def finish() -> bytes:
        return b"]}"  # whatever is held is the trailing comma

    return head, convert, finish


async def _parquet(conn: Any, plan: PagePlan, dialect: Any, tombstones: bool) -> AsyncIterator[bytes]:
    import pyarrow as pa  # only the Parquet path needs pyarrow (tens of MB once loaded)
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    schema = arrow_schema(plan)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    # One thread: the batch is small, and per-thread parse buffers would only add memory.
    read = pa_csv.ReadOptions(column_names=schema.names, use_threads=False)
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    convert = pa_csv.ConvertOptions(
        column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    pool = pa.default_memory_pool()
    after = plan.bounds.after
    template: Template | None = None
    if plan.bounds.upto is not None:  # compiled once; each batch starts after the previous one
        bounds = PageBounds(after=after, upto=plan.bounds.upto, since=plan.bounds.since)
        template = Template(
            rows_statement(
                plan.entity, plan.principal, bounds, tabular=True, limit=BATCH_ROWS, tombstones=tombstones
            ),
            dialect,
        )
    while template is not None:
        batch = bytearray()

        async def collect(data: bytes, batch: bytearray = batch) -> None:
            batch.extend(data)

        await conn.copy_from_query(
            template.sql, *template.args(**after_values(after)), output=collect, format="csv"
        )
        if not batch:
            break

        def encode(data: bytearray = batch) -> tuple[int, str]:
            table = pa_csv.read_csv(
                pa.BufferReader(pa.py_buffer(data)),
                read_options=read,
                parse_options=parse,
                convert_options=convert,
            )
            writer.write_table(table, row_group_size=BATCH_ROWS)
            rows, last = table.num_rows, table.column("export_cursor")[-1].as_py()
            del table
            pool.release_unused()  # give the batch's Arrow memory back before the next one
            return rows, last

        rows, last = await asyncio.to_thread(encode)
        del batch
        yield sink.drain()
        after = Position.parse(last)
        if rows < BATCH_ROWS:
            break
    writer.close()
    yield sink.drain()


async def page_body(engine: AsyncEngine, plan: PagePlan) -> AsyncIterator[bytes]:
    """The page's bytes in its format, read in one REPEATABLE READ, READ ONLY transaction on a
    connection of its own (returned to the pool at the end, dropped if the client went away)."""
    fmt = plan.format
    if plan.empty:  # caught up: nothing to read
        if fmt == ExportFormat.csv:
            yield (",".join(plan.columns) + "\n").encode()  # as COPY writes it
        elif fmt == ExportFormat.json:
            head, _, finish = _json_page(plan)
            yield head + finish()
        elif fmt == ExportFormat.parquet:
            async for chunk in _parquet(None, plan, engine.dialect, tombstones=False):
                yield chunk
        return
    raw = await engine.raw_connection()
    conn = raw.driver_connection
    assert conn is not None
    finished = False
    try:
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        # Timestamps are written from their ISO text in UTC (query.timestamp_text).
        await conn.execute("SET LOCAL datestyle = 'ISO, YMD'; SET LOCAL TIME ZONE 'UTC'")
        probe, probe_args = compile_for_driver(
            tombstones_statement(plan.entity, plan.principal, plan.bounds), engine.dialect
        )
        tombstones = bool(await conn.fetchval(probe, *probe_args))
        if fmt == ExportFormat.parquet:
            async for chunk in _parquet(conn, plan, engine.dialect, tombstones):
                yield chunk
        elif fmt == ExportFormat.csv:
            sql, args = compile_for_driver(
                rows_statement(plan.entity, plan.principal, plan.bounds, tabular=True, tombstones=tombstones),
                engine.dialect,
            )
            async for chunk in _copy_chunks(conn, sql, args, CSV_COPY):
                yield chunk
        else:
            sql, args = compile_for_driver(
                ndjson_statement(plan.entity, plan.principal, plan.bounds, tombstones=tombstones),
                engine.dialect,
            )
            if fmt == ExportFormat.json:
                head, convert, finish = _json_page(plan)
                yield head
                async for chunk in _copy_chunks(conn, sql, args, NDJSON_COPY):
                    yield convert(chunk)
                yield finish()
            else:
                async for chunk in _copy_chunks(conn, sql, args, NDJSON_COPY):
                    yield chunk
        await transaction.commit()
        finished = True
    finally:
        if finished:
            await greenlet_spawn(raw.close)
        else:  # cancelled or failed mid-COPY: the connection's state is unknown
            await greenlet_spawn(raw.invalidate)
