import csv
import json

import pytest
import torch

from ecanet import create_model, explain_attention
from ecanet.explain import LayerExplanation


def test_kernel_size_and_neighbour_share(hand_made_report):
    eca, per_channel, se, _ = hand_made_report.layers
    assert (eca.kernel_size, per_channel.kernel_size, se.kernel_size) == (3, 3, None)
    assert eca.neighbour_share == pytest.approx(2.0 / 4.0)  # |0.5| + |1.5| of |0.5| + |-2| + |1.5|
    assert per_channel.neighbour_share == pytest.approx(1.0 / 3.0)
    assert se.neighbour_share is None
    assert LayerExplanation("one", "ECA", 4, ((0.7,),), 0.5, 0.0, 0.0, ()).neighbour_share == 0.0


def test_table(hand_made_report):
    lines = hand_made_report.table().splitlines()
    assert lines[0] == "toy on 20 images: top-1 85.00%, loss 0.5000; class share by chance 0.0500"
    rows = {
        line.split(" | ")[0].lstrip("| "): [cell.strip() for cell in line.strip("|").split("|")] for line in lines[4:]
    }
    assert rows["layer1.0.eca"] == ["layer1.0.eca", "ECA", "4", "3", "+0.50 -2.00 +1.50", "0.50", "0.400", "0.100",
                                    "0.250", "-5.00 [-9.00, -1.00]", "+0.2000 [+0.1000, +0.3000]"]  # fmt: skip
    assert rows["layer1.1.eca"][4] == "2 kernels of 3"
    assert rows["layer2.0.se"][3:6] == ["", "", ""] and rows["layer2.0.se"][-1] == "+0.0000 [-0.0010, +0.0010]"
    assert rows["layer2.1.cbam"][-2:] == ["—", "—"]
    assert rows["all frozen"][-2:] == ["-10.00 [-14.00, -6.00]", "+0.4000 [+0.3000, +0.5000]"]


def test_csv_has_one_row_per_layer(hand_made_report, tmp_path):
    path = hand_made_report.write_csv(tmp_path / "attention.csv")
    rows = list(csv.DictReader(path.open()))
    assert [row["layer"] for row in rows] == ["layer1.0.eca", "layer1.1.eca", "layer2.0.se", "layer2.1.cbam"]
    assert float(rows[0]["neighbour_share"]) == pytest.approx(0.5) and rows[2]["neighbour_share"] == ""
    assert [float(rows[0][f"frozen_top1_{end}"]) for end in ("change", "low", "high")] == [-5.0, -9.0, -1.0]
    assert float(rows[1]["frozen_loss_low"]) == -0.01 and rows[3]["frozen_top1_change"] == ""
    assert {row["accuracy"] for row in rows} == {"85.0"}


def test_json_holds_everything(hand_made_report, tmp_path):
    values = json.loads(hand_made_report.write_json(tmp_path / "attention.json").read_text())
    assert values["classes"] == ["a", "b", "c"] and values["all_frozen_loss_change"]["mean"] == 0.4
    first = values["layers"][0]
    assert first["kernel"] == [[0.5, -2.0, 1.5]] and first["kernel_size"] == 3
    assert first["class_means"][0] == [0.3, 0.4, 0.5, 0.6] and first["class_means"][2][0] is None
    assert (
        values["layers"][0]["frozen_top1_change"]["high"] == -1.0 and values["layers"][3]["frozen_loss_change"] is None
    )


def test_json_of_a_single_image_explanation(tmp_path):
    # One image: the frozen changes have no spread and no interval, which strict JSON writes as null.
    torch.manual_seed(0)
    model = create_model("eca_resnet18", num_classes=3, in_chans=1, small_input=True, width=8)
    report = explain_attention(model, [(torch.randn(1, 1, 16, 16), torch.tensor([2]))], ("a", "b", "c"))
    values = json.loads(report.write_json(tmp_path / "one.json").read_text())
    change = values["all_frozen_top1_change"]
    assert change["count"] == 1 and change["std"] is None and change["low"] is None
    assert values["layers"][0]["class_means"][0][0] is None and values["layers"][0]["class_means"][2][0] is not None
