"""Building torchvision, timm and ecanet models by name, without downloading anything."""

from __future__ import annotations

import pytest

from ecanet.retrofit.model_names import build_named_model


@pytest.mark.parametrize(
    ("spec", "class_name"),
    [
        ("torchvision:resnet18", "ResNet"),
        ("mobilenet_v3_small", "MobileNetV3"),
        ("timm:resnet18", "ResNet"),
        ("timm:mobilenetv2_050", "EfficientNet"),
        ("ecanet:resnet18", "ResNet"),
    ],
)
def test_builds_by_name(spec: str, class_name: str) -> None:
    model = build_named_model(spec, num_classes=7)
    assert type(model).__name__ == class_name
    assert type(model).__module__.split(".")[0] == (spec.split(":")[0] if ":" in spec else "torchvision")
    assert list(model.parameters())[-1].shape[0] == 7


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("keras:resnet50", "unknown model source 'keras'"),
        ("timm:resnet_nope", "unknown model 'resnet_nope': not in the list_models\\(\\) of timm"),
        ("", "non-empty string"),
    ],
)
def test_errors(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_named_model(spec)


def test_detection_models_get_no_backbone_weights_either(tmp_path, monkeypatch) -> None:
    # torchvision's detection builders default their backbone to ImageNet weights, even with weights=None.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_named_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")
    assert type(model).__name__ == "FasterRCNN"
    assert not any(tmp_path.rglob("*"))
