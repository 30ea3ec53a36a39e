"""Errors raised by the database layer; each message says what to do."""

import asyncpg

# Errors meaning "the database can't be reached right now" (not "our SQL is wrong").
DATABASE_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError, asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


class DatabaseError(Exception):
    """The knowledge base cannot be used as configured."""


class EmbeddingModelMismatch(DatabaseError):
    """The database was filled by another embedding model than the configured one."""

    def __init__(self, *, stored_model: str, stored_dimension: int, model: str, dimension: int) -> None:
        super().__init__(
            f"the knowledge base was built with {stored_model} ({stored_dimension} dimensions) but "
            f"EMBEDDING_MODEL is {model} ({dimension} dimensions). Set EMBEDDING_MODEL/EMBEDDING_PROVIDER "
            f"back, or run `askdocs migrate --reset-embeddings` and then `askdocs sync --force` to re-embed."
        )
        self.stored_model = stored_model
        self.stored_dimension = stored_dimension
