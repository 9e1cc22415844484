import math

import pytest
import timm
import torch
import torchvision
from torch import nn

from batchnorm_statistics import with_random_statistics
from ecanet import ECA, SE, add_eca, create_model, explain_attention
from reference import eca_reference

CLASSES = ("zero", "one", "two")


class _TwoGates(nn.Module):
    """conv -> ECA -> conv -> SE -> pooled linear classifier: small enough to recompute by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.eca = ECA(8, kernel_size=3)
        self.mix = nn.Conv2d(8, 16, 3, padding=1)
        self.se = SE(16, reduction=4, bias=True)
        self.head = nn.Linear(16, len(CLASSES))

    def forward(self, x):
        return self.head(self.se(self.mix(self.eca(self.stem(x)))).mean((2, 3)))


def _float64_pass(model, images, eca_gate=None, se_gate=None):
    """Logits and both layers' gates in float64, the gates optionally replaced by fixed ones."""
    m = {name: p.double() for name, p in model.named_parameters()}
    stem = nn.functional.conv2d(images.double(), m["stem.weight"], m["stem.bias"], padding=1)
    ones = torch.ones(stem.shape[0], 8, 1, dtype=torch.float64)
    eca = eca_reference(ones, m["eca.conv.weight"], descriptor=stem.mean((2, 3)))[..., 0]
    mixed = nn.functional.conv2d(stem * (eca if eca_gate is None else eca_gate)[..., None, None],
                                 m["mix.weight"], m["mix.bias"], padding=1)  # fmt: skip
    hidden = torch.relu(mixed.mean((2, 3)) @ m["se.fc1.weight"].T + m["se.fc1.bias"])
    se = torch.sigmoid(hidden @ m["se.fc2.weight"].T + m["se.fc2.bias"])
    pooled = (mixed * (se if se_gate is None else se_gate)[..., None, None]).mean((2, 3))
    return pooled @ m["head.weight"].T + m["head.bias"], eca, se


def _accuracy_and_loss(logits, labels):
    accuracy = 100.0 * float((logits.argmax(1) == labels).double().mean())
    return accuracy, float(nn.functional.cross_entropy(logits, labels))


T_975_39_DEGREES = 2.022691  # Student t quantile for a two-sided 95% interval over 40 pairs (tables)


def _assert_paired_change(change, after, before):
    """``change`` is the mean of ``after - before`` with a paired 95% t interval over 40 images."""
    differences = after - before
    half_width = T_975_39_DEGREES * float(differences.std()) / math.sqrt(len(differences))
    mean = float(differences.mean())
    assert change.count == 40 and change.mean == pytest.approx(mean, rel=1e-5, abs=1e-9)
    assert change.test == "two-sided paired t interval over images"
    assert change.low == pytest.approx(mean - half_width, rel=1e-4, abs=1e-9)
    assert change.high == pytest.approx(mean + half_width, rel=1e-4, abs=1e-9)


def _per_image(logits, labels):
    """100 for a right top-1 prediction, else 0; and the cross-entropy, per image."""
    right = 100.0 * (logits.argmax(1) == labels).double()
    return right, nn.functional.cross_entropy(logits, labels, reduction="none")


def test_every_number_matches_a_float64_recomputation():
    torch.manual_seed(0)
    model = _TwoGates().train()
    model.se.eval()  # a module kept in eval mode on purpose must stay so
    with torch.no_grad():
        model.eca.conv.weight.mul_(8)  # gates that vary enough to matter
        model.se.fc2.weight.mul_(8)
        model.head.weight.mul_(20)  # logits far enough apart for the frozen gates to move the loss
    images, labels = torch.randn(40, 1, 6, 6), torch.randint(0, 3, (40,))
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 40, 16)]
    report = explain_attention(model, batches, CLASSES, name="two gates")
    assert model.training and model.eca.training and not model.se.training  # each module's mode restored

    with torch.no_grad():
        logits, eca, se = _float64_pass(model, images)
        eca_mean, se_mean = eca.mean(0), se.mean(0)
        frozen = [_float64_pass(model, images, eca_gate=eca_mean)[0], _float64_pass(model, images, se_gate=se_mean)[0],
                  _float64_pass(model, images, eca_gate=eca_mean, se_gate=se_mean)[0]]  # fmt: skip
    accuracy, loss = _accuracy_and_loss(logits, labels)
    assert (report.model, report.images, report.classes) == ("two gates", 40, CLASSES)
    assert report.accuracy == pytest.approx(accuracy) and report.loss == pytest.approx(loss, rel=1e-5)
    assert [layer.name for layer in report.layers] == ["eca", "se"]
    for layer, gates in zip(report.layers, (eca, se), strict=True):
        assert layer.mean_gate == pytest.approx(float(gates.mean()), rel=1e-5)
        assert layer.spread == pytest.approx(math.sqrt(float(gates.var(0, unbiased=False).mean())), rel=1e-4)
        class_means = torch.stack([gates[labels == k].mean(0) for k in range(3)])
        torch.testing.assert_close(
            torch.tensor(layer.class_means, dtype=torch.float64), class_means, rtol=1e-5, atol=1e-6
        )
        between = sum((labels == k).sum() * (class_means[k] - gates.mean(0)).square() for k in range(3))
        total = (gates - gates.mean(0)).square().sum(0)
        assert layer.class_share == pytest.approx(float(between.sum() / total.sum()), rel=1e-4)
    assert report.layers[0].kernel == (tuple(model.eca.conv.weight.detach().double().flatten().tolist()),)
    assert report.layers[1].kernel == ()
    right, losses = _per_image(logits, labels)
    changes = [(layer.frozen_top1_change, layer.frozen_loss_change) for layer in report.layers]
    changes.append((report.all_frozen_top1_change, report.all_frozen_loss_change))
    for (top1_change, loss_change), frozen_logits in zip(changes, frozen, strict=True):
        frozen_right, frozen_losses = _per_image(frozen_logits, labels)
        _assert_paired_change(top1_change, frozen_right, right)
        _assert_paired_change(loss_change, frozen_losses, losses)
    assert abs(report.all_frozen_loss_change.mean) > 1e-3 * report.loss  # freezing did something


def _torchvision_mobilenet_v3_small():
    model = torchvision.models.mobilenet_v3_small(num_classes=3)
    model.features[0][0] = nn.Conv2d(1, 16, 3, 2, 1, bias=False)
    return model


def _timm_resnet10t(attention):
    return lambda: timm.create_model("resnet10t", num_classes=3, in_chans=1, block_args={"attn_layer": attention})


def _retrofitted_torchvision_resnet18():
    model = torchvision.models.resnet18(num_classes=3)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    add_eca(model)
    return model


def _registered(name):
    kwargs = {"width_mult": 0.25} if "mobilenet" in name else {"width": 8}
    return lambda: create_model(name, num_classes=3, in_chans=1, small_input=True, **kwargs)


@pytest.mark.parametrize(
    ("build", "layers", "replaceable"),
    [
        (_registered("eca_resnet18"), 8, True),
        (_registered("se_resnet18"), 8, True),
        (_registered("eca_mobilenet_v2"), 17, True),
        (_registered("cbam_resnet18"), 8, False),  # CBAM's gate is followed by a spatial one
        (_retrofitted_torchvision_resnet18, 8, True),
        (_torchvision_mobilenet_v3_small, 9, True),  # torchvision's SqueezeExcitation
        (_timm_resnet10t("eca"), 4, True),
        (_timm_resnet10t("se"), 4, True),
    ],
)
def test_gates_that_cannot_differ_between_images_cost_nothing_when_frozen(build, layers, replaceable):
    # Copies of one image: every layer's mean gate is its gate, so freezing changes no output,
    # the gates do not spread and the class explains none of it; running statistics stay put.
    torch.manual_seed(0)
    model = with_random_statistics(build())
    state = {key: value.clone() for key, value in model.state_dict().items()}
    image = torch.randn(1, 1, 16, 16)
    batches = [(image.expand(4, -1, -1, -1), torch.tensor([0, 1, 2, 0])) for _ in range(2)]
    report = explain_attention(model, batches, CLASSES)
    assert report.images == 8 and len(report.layers) == layers
    for layer in report.layers:
        assert layer.spread < 1e-6 and layer.class_share < 1e-3
        if replaceable:
            assert layer.frozen_top1_change.mean == 0 and layer.frozen_top1_change.std == 0
            assert abs(layer.frozen_loss_change.mean) < 1e-6 * report.loss
        else:
            assert layer.frozen_top1_change is None and report.all_frozen_top1_change is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_without_freezing_one_pass_suffices_even_over_an_iterator():
    torch.manual_seed(0)
    model = _TwoGates()
    report = explain_attention(model, iter([(torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 1, 0]))]), CLASSES,
                               freeze=False)  # fmt: skip
    assert report.images == 5 and report.all_frozen_top1_change is None
    assert all(layer.frozen_top1_change is None and layer.frozen_loss_change is None for layer in report.layers)


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.spare = ECA(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "batches", "kwargs", "error", "message"),
    [
        (nn.Sequential(nn.Conv2d(1, 3, 1), nn.Flatten()), [], {}, ValueError, "Sequential has no channel attention"),
        (_TwoGates(), iter([]), {}, ValueError, "re-iterable"),
        (_TwoGates(), [], {}, ValueError, "no images"),
        (
            _TwoGates(),
            [(torch.randn(2, 1, 6, 6), torch.tensor([0, 3]))],
            {},
            ValueError,
            r"labels must lie in 0 \.\. 2",
        ),
        (_Unused(), [(torch.randn(2, 1, 6, 6), torch.tensor([0, 1]))], {}, ValueError, "spare ran for 0 of 2 images"),
        (_TwoGates(), [], {"layers": ["eca", "nope"]}, ValueError, "_TwoGates has no module named 'nope'"),
        (
            _TwoGates(),
            [],
            {"layers": ["eca", ""]},
            ValueError,
            r"layers must name modules of _TwoGates, got \['eca', ''\]",
        ),
        (_TwoGates(), [], {"layers": []}, ValueError, r"layers must name modules of _TwoGates, got \[\]"),
        (_TwoGates(), [], {"layers": ["eca", "se", "eca"]}, ValueError, "layers names 'eca' more than once"),
        (
            _TwoGates(),
            [(torch.randn(2, 1, 6, 6), torch.tensor([0, 1]))],
            {"layers": ["mix"]},
            ValueError,
            r"mix cannot be explained as a channel gate: input and output must be \(N, C, \*\) of one shape",
        ),
    ],
)
def test_bad_input_is_refused_with_the_reason(model, batches, kwargs, error, message):
    with pytest.raises(error, match=message):
        explain_attention(model, batches, CLASSES, **kwargs)


class _OtherLibraries(nn.Module):
    """torchvision's squeeze-and-excitation, then timm's ECA, then a pooled linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.se = torchvision.ops.SqueezeExcitation(8, 4)
        self.eca = timm.layers.EcaModule(channels=8, kernel_size=3)
        self.head = nn.Linear(8, len(CLASSES))

    def forward(self, x):
        return self.head(self.eca(self.se(self.stem(x))).mean((2, 3)))


def test_other_libraries_layers_are_read_from_their_outputs():
    torch.manual_seed(0)
    model = _OtherLibraries()
    with torch.no_grad():
        model.eca.conv.weight.mul_(6)
        model.head.weight.mul_(20)
    images, labels = torch.randn(40, 1, 6, 6), torch.randint(0, 3, (40,))
    report = explain_attention(model, [(images[:25], labels[:25]), (images[25:], labels[25:])], CLASSES)
    with torch.no_grad():  # both gates in float64, from the layers' parameters
        m = {name: p.double() for name, p in model.named_parameters()}
        stem = nn.functional.conv2d(images.double(), m["stem.weight"], m["stem.bias"], padding=1)
        hidden = torch.relu(stem.mean((2, 3)) @ m["se.fc1.weight"][..., 0, 0].T + m["se.fc1.bias"])
        se = torch.sigmoid(hidden @ m["se.fc2.weight"][..., 0, 0].T + m["se.fc2.bias"])
        ones = torch.ones(40, 8, 1, dtype=torch.float64)
        eca = eca_reference(ones, m["eca.conv.weight"], descriptor=(stem * se[..., None, None]).mean((2, 3)))[..., 0]
    assert [(layer.name, layer.kind) for layer in report.layers] == [("se", "SqueezeExcitation"), ("eca", "EcaModule")]
    for layer, gates in zip(report.layers, (se, eca), strict=True):
        class_means = torch.stack([gates[labels == k].mean(0) for k in range(3)])
        torch.testing.assert_close(
            torch.tensor(layer.class_means, dtype=torch.float64), class_means, rtol=1e-4, atol=1e-6
        )
        assert layer.frozen_loss_change is not None
    assert report.layers[1].kernel == (tuple(model.eca.conv.weight.detach().double().flatten().tolist()),)
    assert report.layers[0].kernel == ()


def test_an_eca_layer_built_without_its_channel_count_is_explained():
    model = nn.Sequential(nn.Conv2d(1, 6, 3), ECA(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    report = explain_attention(model, [(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))], CLASSES)
    assert report.layers[0].channels == 6 and report.layers[0].kernel_size == 3


class _FixedScale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.linspace(-2, 2, channels))

    def forward(self, x):
        return x * torch.sigmoid(self.logits)[:, None, None]


def test_named_layers_of_ones_own_are_explained_as_channel_gates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 5, 3), _FixedScale(5), ECA(5), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 3))  # fmt: skip
    report = explain_attention(model, [(torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))], CLASSES,
                               layers=["1"])  # fmt: skip
    (layer,) = report.layers
    assert (layer.name, layer.kind, layer.spread) == ("1", "_FixedScale", pytest.approx(0.0, abs=1e-6))
    expected = torch.sigmoid(torch.linspace(-2, 2, 5, dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(layer.class_means[0], dtype=torch.float64), expected, rtol=1e-5, atol=1e-6)
    assert layer.frozen_top1_change.mean == 0
