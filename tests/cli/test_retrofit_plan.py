"""``ecanet retrofit-plan``: prints the plan for a named model."""

from __future__ import annotations

import pytest

from ecanet.cli.main import main


def test_plan_for_torchvision_resnet18(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retrofit-plan", "torchvision:resnet18", "--kernel-size", "3", "--exclude", "layer4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("torchvision:resnet18 (ResNet, 11,689,512 parameters)")
    assert lines[1].split()[:3] == ["place", "action", "strategy"]
    rows = [line.split() for line in lines[2:8]]
    assert [row[0] for row in rows] == [f"layer{s}.{b}.bn2" for s in range(1, 4) for b in range(2)]
    assert all(row[-2:] == ["3", "+3"] for row in rows)
    assert lines[8].startswith("6 ECA planned (6 inserted, 0 SE swapped); parameters +18")
    assert "layer4.0.bn2" in lines[10] and "excluded by 'layer4'" in lines[10]


def test_plan_with_se_swap_for_timm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retrofit-plan", "timm:mobilenetv3_small_050", "--replace-se", "--hide-skipped"]) == 0
    out = capsys.readouterr().out
    assert "SE swap" in out and "swap SE" in out and "skipped" not in out
    assert "= net -" in out


def test_unknown_model_exits_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retrofit-plan", "torchvision:nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_bad_kernel_size_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["retrofit-plan", "resnet18", "--kernel-size", "big"])
    assert exit_info.value.code == 2 and "'adaptive' or an odd int" in capsys.readouterr().err
