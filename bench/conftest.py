"""Benchmarks run with pytest-benchmark: `make bench`. Peers are skipped when not installed;
benchmarks marked ``gpu`` are skipped without CUDA."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def two_threads():
    """Torch threads for a module's benchmarks (``TENSORNET_BENCH_THREADS``, default 2)."""
    import os

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("TENSORNET_BENCH_THREADS", "2")))
    yield
    torch.set_num_threads(before)
