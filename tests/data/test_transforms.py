import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecanet.data import transforms
from ecanet.data.transforms import ImageTransform, default_padding, resize_images

MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1)


def reference_normalise(image: np.ndarray) -> np.ndarray:
    mean = np.array(MEAN, dtype=np.float64).reshape(-1, 1, 1)
    std = np.array(STD, dtype=np.float64).reshape(-1, 1, 1)
    return (image.astype(np.float64) / 255.0 - mean) / std


def reference_candidates(image: np.ndarray, padding: int, flip: bool) -> list[np.ndarray]:
    """Every image a random crop (and flip) may give: all offsets into the zero-padded image."""
    height, width = image.shape[1:]
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    crops = [
        padded[:, top : top + height, left : left + width]
        for top in range(2 * padding + 1)
        for left in range(2 * padding + 1)
    ]
    return crops + [crop[:, :, ::-1] for crop in crops] if flip else crops


@pytest.fixture
def image() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(3, 6, 5), dtype=np.uint8))


def test_without_augmentation_it_only_normalises(image: torch.Tensor) -> None:
    out = ImageTransform(MEAN, STD)(image, index=0, epoch=0)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference_normalise(image.numpy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("flip", [True, False])
def test_augmented_images_are_padded_crops_and_cover_every_choice(image: torch.Tensor, flip: bool) -> None:
    transform = ImageTransform(MEAN, STD, augment=True, padding=2, flip=flip, seed=4)
    candidates = [reference_normalise(candidate) for candidate in reference_candidates(image.numpy(), 2, flip)]
    seen = set()
    for index in range(600):
        out = transform(image, index=index, epoch=1).numpy()
        matches = [number for number, candidate in enumerate(candidates) if np.allclose(out, candidate, atol=1e-5)]
        assert matches, f"index {index} is no padded crop"
        seen.update(matches)
    assert len(seen) == len(candidates)  # 25 offsets (x2 flips): all of them occur


def test_choices_depend_on_seed_epoch_and_index_only(image: torch.Tensor) -> None:
    def outputs(seed: int, epoch: int) -> list[torch.Tensor]:
        transform = ImageTransform(MEAN, STD, augment=True, padding=2, seed=seed)
        return [transform(image, index=index, epoch=epoch) for index in range(20)]

    torch.manual_seed(123)  # the global generators play no part
    first = outputs(seed=1, epoch=0)
    torch.manual_seed(456)
    assert all(torch.equal(a, b) for a, b in zip(first, outputs(seed=1, epoch=0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, outputs(seed=1, epoch=1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, outputs(seed=2, epoch=0), strict=True))


@pytest.mark.parametrize(("size", "padding"), [(28, 3), (32, 4), (64, 8), (8, 1), (4, 1)])
def test_default_padding(size: int, padding: int) -> None:
    assert default_padding(size) == padding


def test_resize_keeps_same_size_and_constant_images() -> None:
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert resize_images(images, 28) is images
    constant = torch.full((2, 3, 28, 28), 77, dtype=torch.uint8)
    for size in (14, 32, 57):
        resized = resize_images(constant, size)
        assert resized.dtype == torch.uint8 and resized.shape == (2, 3, size, size)
        assert torch.equal(resized, torch.full_like(resized, 77))


def test_resize_goes_in_chunks_and_gives_what_one_call_gives() -> None:
    images = torch.randint(0, 256, (transforms._RESIZE_CHUNK + 3, 1, 9, 9), generator=torch.Generator().manual_seed(0))
    images = images.to(torch.uint8)
    whole = F.interpolate(images.float(), size=(12, 12), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(resize_images(images, 12), whole.round().clamp(0, 255).to(torch.uint8))


def test_resize_halving_averages_neighbourhoods() -> None:
    # A column pattern 0,255,0,255,...: halving with an antialiasing filter gives the mean, 127.5 -> 128
    # everywhere except at the borders, where the filter is truncated.
    stripes = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    stripes[..., 1::2] = 255
    inner = resize_images(stripes, 8)[0, 0, :, 1:-1]
    assert torch.all((inner - 128).abs() <= 1)
