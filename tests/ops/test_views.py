import pytest
import torch

from ecanet.ops.views import channel_view


@pytest.mark.parametrize(
    ("shape", "memory_format", "channel_dim"),
    [
        ((2, 3, 5), torch.contiguous_format, 1),
        ((2, 3, 4, 5), torch.contiguous_format, 1),
        ((2, 3, 4, 5), torch.channels_last, 1),
        ((2, 3, 2, 4, 5), torch.channels_last_3d, 1),
        ((2, 7, 3), torch.contiguous_format, -1),
        ((2, 4, 5, 3), torch.contiguous_format, -1),
        ((1, 3, 1, 1), torch.channels_last, 1),
    ],
)
def test_view_holds_the_same_elements_as_n_c_s(shape, memory_format, channel_dim):
    x = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape).to(memory_format=memory_format)
    view = channel_view(x, channel_dim)
    # Independent construction: move channels to dim 1 and flatten a copy.
    expected = x.movedim(channel_dim, 1).reshape(shape[0], x.shape[channel_dim], -1)
    assert view is not None and view.data_ptr() == x.data_ptr()
    torch.testing.assert_close(view, expected, rtol=0, atol=0)
    view.zero_()  # a view, not a copy
    assert not x.any()


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(2, 3, 8, 8)[:, :, ::2],
        lambda: torch.zeros(2, 3, 8, 8).transpose(2, 3),
        lambda: torch.zeros(2, 3, 1, 1).expand(2, 3, 4, 4),
        lambda: torch.zeros(4, 3, 8, 8)[::2],
    ],
)
def test_layouts_without_a_view_give_none(make):
    assert channel_view(make(), 1) is None
