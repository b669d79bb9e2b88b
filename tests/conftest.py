"""Shared test configuration: the `gpu` marker skips without CUDA; a `device` fixture runs a
test on CPU and (when available) on CUDA."""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# `make mutate` runs each mutant against fewer, fixed examples (tools/mutate.py sets the profile)
settings.register_profile(
    "mutate", max_examples=10, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.load_profile(os.environ.get("TENSORNET_HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    return torch.device(request.param)


if os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate":
    # Under mutmut every mutant runs in a process forked after a full test run, so plans cached
    # then would be reused and hide the mutated planning code: start each test with none.
    @pytest.fixture(autouse=True)
    def _no_plans_cached_before_the_test():
        import tensornet as tn

        tn.clear_cache()  # every route's plans: one cache

    def _fresh_dask_offload_thread() -> None:
        # Dask (de)serializes through a module-level one-thread pool; a forked child inherits
        # the pool but not its thread, so the first Dask task in a mutant would wait forever.
        utils = sys.modules.get("distributed.utils")
        if utils is not None:
            utils._offload_executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="Dask-Offload"
            )

    os.register_at_fork(after_in_child=_fresh_dask_offload_thread)
