"""Process-wide resources, opened once by the app's lifespan or a worker's startup."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, session_factory


@dataclass
class AppState:
    """Engine, session factory, Redis (arq) and one shared HTTP client."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    http: httpx.AsyncClient
    # Metrics and exports read here: DATABASE_READ_URL (a replica) when set, else the primary.
    read_engine: AsyncEngine | None = None
    read_sessions: async_sessionmaker[AsyncSession] | None = None

    def reader(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for metrics and exports (the replica's when there is one)."""
        return self.read_sessions or self.sessions

    @property
    def reads(self) -> AsyncEngine:
        """Where bulk reads (exports) go: the replica when DATABASE_READ_URL is set, else the primary."""
        return self.read_engine or self.engine

    @classmethod
    def open(cls, settings: Settings) -> AppState:
        """Create the resources; nothing connects until first use, so a Redis outage is survivable."""
        engine = create_engine(settings)
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set (and no embedded server was started)")
        redis = ArqRedis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
        read_engine = (
            create_engine(settings, url=settings.database_read_url) if settings.database_read_url else None
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            redis=redis,
            http=httpx.AsyncClient(timeout=10.0),
            read_engine=read_engine,
            read_sessions=session_factory(read_engine) if read_engine is not None else None,
        )

    async def close(self) -> None:
        """Release connections."""
        await self.http.aclose()
        await self.redis.aclose()
        await self.engine.dispose()
        if self.read_engine is not None:
            await self.read_engine.dispose()
