import pytest
import torch

from mpqsearch.example import EXAMPLE_INPUT_SHAPE, build


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def example_model():
    return build()


@pytest.fixture
def example_input():
    return torch.randn(EXAMPLE_INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def calib_data():
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(4, *EXAMPLE_INPUT_SHAPE[1:], generator=gen) for _ in range(3)]


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server per test session; the tests that need it are skipped, with
    the reason, where it cannot start."""
    from postgres_server import PostgresUnavailable, throwaway_postgres

    server = throwaway_postgres()
    try:
        url = server.__enter__()
    except PostgresUnavailable as err:
        pytest.skip(f"PostgreSQL unavailable: {err}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server."""
    from postgres_server import new_database

    return new_database(postgres_server)


@pytest.fixture(scope="session", autouse=True)
def _portable_target():
    """Results that do not depend on this CPU, from the session's first fixture on: the default
    export target is ``portable`` (exact on every x86 CPU) unless a test asks for another; child
    processes inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MPQSEARCH_TARGET", "portable")
        yield
