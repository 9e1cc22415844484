import pytest
import torch

from ecanet.ops.views import channel_geometry, channel_view, required_channel_geometry, same_layout


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
def test_layouts_without_a_view_are_named(make):
    x = make()
    assert channel_geometry(x, 1) is None
    with pytest.raises(RuntimeError, match=r"no \(N, C, S\) view for a tensor of shape"):
        channel_view(x, 1)


@pytest.mark.parametrize(
    ("make", "channel_dim", "expected"),
    [
        (lambda: torch.zeros(2, 3, 4, 5), 1, (2, 3, 20, 60, 20, 1)),
        (lambda: torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last), 1, (2, 3, 20, 60, 1, 3)),
        (lambda: torch.zeros(2, 3, 2, 4, 5).to(memory_format=torch.channels_last_3d), 1, (2, 3, 40, 120, 1, 3)),
        (lambda: torch.zeros(2, 7, 3), -1, (2, 3, 7, 21, 1, 3)),
        (lambda: torch.zeros(2, 4, 5, 3), -1, (2, 3, 20, 60, 1, 3)),
        # Dense, but neither contiguous nor torch.channels_last: (N, S, C) memory of an (N, C, S) tensor.
        (lambda: torch.zeros(2, 5, 3).transpose(1, 2), 1, (2, 3, 5, 15, 1, 3)),
        # Size-1 dims address nothing, whatever their strides.
        (lambda: torch.zeros(2, 1, 5, 3).permute(0, 3, 1, 2), 1, (2, 3, 5, 15, 1, 3)),
        (lambda: torch.zeros(0, 3, 4, 4), 1, (0, 3, 16, 48, 16, 1)),
        (lambda: torch.zeros(2, 3, 8, 8)[:, :, ::2], 1, None),
        (lambda: torch.zeros(4, 3, 8, 8)[::2], 1, None),
        (lambda: torch.zeros(2, 3, 1, 1).expand(2, 3, 4, 4), 1, None),
    ],
)
def test_geometry_is_read_from_sizes_and_strides(make, channel_dim, expected):
    x = make()
    assert channel_geometry(x, channel_dim) == expected
    if expected is not None and x.numel():
        view = channel_view(x, channel_dim)
        torch.testing.assert_close(view, x.movedim(channel_dim, 1).reshape(view.shape), rtol=0, atol=0)


def test_same_layout_ignores_strides_of_size_one_dims():
    pixel, image = torch.zeros(2, 3, 1, 1), torch.zeros(2, 3, 4, 4)
    assert same_layout(pixel, pixel.contiguous(memory_format=torch.channels_last))
    assert not same_layout(image, image.contiguous(memory_format=torch.channels_last))
    assert not same_layout(image, torch.zeros(2, 3, 4, 5))


def test_required_geometry_names_the_shape_and_strides_it_cannot_see_as_n_c_s():
    with pytest.raises(RuntimeError, match=r"no \(N, C, S\) view for a tensor of shape \[2, 3, 4, 4\] and strides"):
        required_channel_geometry(torch.zeros(2, 3, 8, 4)[:, :, ::2], 1)
