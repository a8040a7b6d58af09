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
