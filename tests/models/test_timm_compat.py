import pytest
import torch

import ecanet

timm = pytest.importorskip("timm")


def test_eca_is_a_timm_attention_layer():
    model = timm.create_model("resnet50", pretrained=False, num_classes=10, block_args={"attn_layer": ecanet.ECA})
    ecas = [m for m in model.modules() if isinstance(m, ecanet.ECA)]
    assert len(ecas) == 16
    assert [m.channels for m in ecas[:4]] == [256, 256, 256, 512]
    out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_timm_resnet_with_eca_adds_only_the_kernels():
    with torch.device("meta"):
        model = timm.create_model("resnet50", pretrained=False, block_args={"attn_layer": ecanet.ECA})
    # timm's ECA here uses the adaptive k per block width: 5, 5, 5, 7 over 3, 4, 6, 3 blocks.
    assert sum(p.numel() for p in model.parameters()) == 25_557_032 + 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7
