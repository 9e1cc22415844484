import pytest

from ecanet import list_models
from ecanet.cli.main import main


def _rows(output):
    """The table rows, by model name."""
    names = set(list_models())
    return {line.split()[0]: line.split() for line in output.splitlines() if line.split() and line.split()[0] in names}


def test_eca_resnet50_shows_the_papers_numbers(capsys):
    assert main(["info", "eca_resnet50", "resnet50"]) == 0
    output = capsys.readouterr().out
    assert "2^20" in output and "2^30" in output and "decimal" in output
    eca = _rows(output)["eca_resnet50"]
    # model, params (M), params (2^20), attention params, GMACs, MACs (2^30), GFLOPs, paper params, paper FLOPs
    assert eca[1:4] == ["25.56", "24.37", "80"]
    assert eca[7:] == ["24.37", "3.860"]
    assert _rows(output)["resnet50"][3] == "0"


def test_patterns_expand_in_order_without_duplicates(capsys):
    assert main(["info", "*mobilenet*", "mobilenet_v2", "--image-size", "32", "--num-classes", "10"]) == 0
    output = capsys.readouterr().out
    assert list(_rows(output)) == ["eca_mobilenet_v2", "mobilenet_v2", "se_mobilenet_v2"]
    assert all(row[-2:] == ["-", "-"] for row in _rows(output).values())  # not the paper's setting


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "eca_resnet5"], "did you mean 'eca_resnet50'"),
        (["info", "vit*"], "pattern 'vit*' matches no registered model"),
        (["info", "resnet18", "--image-size", "0"], "must be positive"),
    ],
)
def test_errors_exit_with_2(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
