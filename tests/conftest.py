import os

import pytest
import torch

# two threads on CI's two cores; TOKENSDE_TEST_THREADS=1 when two test runs share the machine
THREADS = int(os.environ.get("TOKENSDE_TEST_THREADS", "2"))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield
