import pytest

from intra_op_threads import intra_op_threads


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The models here run on tiny inputs, where intra-op threads only add synchronisation; on a
    shared CPU their spin-waiting made a 5 ms forward pass take seconds."""
    with intra_op_threads(1):
        yield
