import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The models here run on tiny inputs, where intra-op threads only add synchronisation; on a
    shared CPU their spin-waiting made a 5 ms forward pass take seconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
