"""End-to-end compares: tiny real training runs, the CLI's table, the files, and resumption."""

import csv
import dataclasses
import shutil

import pytest

from ecanet.cli.main import main
from ecanet.experiments import CompareConfig, compare_preset, run_compare
from ecanet.experiments.report import CSV_COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Width 4: stages of 4, 8, 16, 32 channels; two blocks each.
# 16 px images and two steps of 32 keep each run to about a second of training plus one evaluation pass.
TINY_FLAGS = ["--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch", "2", "--width", "4", "--workers", "0"]
TINY_FLAGS += ["--image-size", "16"]
TINY_FLAGS += ["--latency-batch-size", "4", "--latency-rounds", "3", "--seeds", "1", "--no-progress"]


def _tiny_config(run_dir, attentions):
    """The API twin of TINY_FLAGS: the demo preset, shrunk."""
    training = dataclasses.replace(
        compare_preset("demo").training,
        model_kwargs={"width": 4},
        image_size=16,
        epochs=1,
        batch_size=32,
        max_steps_per_epoch=2,
        workers=0,
        progress=False,
    )
    return CompareConfig("resnet18", attentions, 1, training, run_dir=run_dir, latency_batch_size=4, latency_rounds=3)


@pytest.fixture(scope="module")
def tiny_compare(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("compare")
    import contextlib
    import io

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["compare", "--attention", "none,eca", "--run-dir", str(run_dir), *TINY_FLAGS])
    return run_dir, code, output.getvalue()


@pytest.mark.slow
def test_cli_prints_the_table(tiny_compare):
    _, code, output = tiny_compare
    assert code == 0
    header = next(line for line in output.splitlines() if line.startswith("attention"))
    assert "params" in header and "top-1 %" in header and "Δtop-1" in header and "top-5 %" in header
    rows = [line for line in output.splitlines() if line.startswith(("none ", "eca "))]
    assert len(rows) == 2 and "baseline" in rows[0] and "1 seed: no CI" in rows[1]


@pytest.mark.slow
def test_results_csv(tiny_compare):
    run_dir, _, _ = tiny_compare
    with (run_dir / "results.csv").open() as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = {row["attention"]: row for row in reader}
    assert list(rows) == ["none", "eca"]
    none, eca = rows["none"], rows["eca"]
    # ECA's k per stage from the paper's rule, by hand: C=4 -> 1, 8 -> 3, 16 -> 3, 32 -> 3;
    # two blocks per stage, k weights each: 2 * (1 + 3 + 3 + 3) = 20 extra parameters.
    assert int(eca["params_delta"]) == 20 and int(none["params_delta"]) == 0
    assert int(eca["params"]) == int(none["params"]) + 20
    for row in rows.values():
        assert 0.0 <= float(row["top1_mean"]) <= 100.0
        assert float(row["top1_mean"]) <= float(row["top5_mean"]) <= 100.0
        assert float(row["latency_p25_ms"]) <= float(row["latency_ms"]) <= float(row["latency_p75_ms"])
        assert float(row["throughput_images_per_s"]) == pytest.approx(4 / (float(row["latency_ms"]) / 1e3))
        assert float(row["epoch_seconds"]) > 0 and int(row["flops"]) > 0
        assert row["seeds"] == "1" and row["top1_std"] == "" and row["top1_delta_low"] == ""
    assert float(eca["top1_delta"]) == pytest.approx(float(eca["top1_mean"]) - float(none["top1_mean"]))


@pytest.mark.slow
def test_report_and_plots(tiny_compare):
    run_dir, _, _ = tiny_compare
    for name in ("accuracy_curves.png", "accuracy_vs_latency.png", "eca_kernel_sizes.png"):
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE)
    report = (run_dir / "report.md").read_text()
    assert "# Does ECA help resnet18 on fashion-mnist?" in report
    assert "ecanet compare --preset demo --attention none,eca --seeds 1" in report
    assert "ECA kernel sizes of `eca` (8 layers): 1, 1, 3, 3, 3, 3, 3, 3." in report
    assert sorted(path.name for path in run_dir.iterdir() if path.is_dir()) == ["eca-seed0", "none-seed0"]


def _run_files(run_dir):
    return {path: path.stat().st_mtime_ns for path in run_dir.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_rerun_reuses_finished_runs_and_adds_missing_ones(tiny_compare, tmp_path):
    # A compare killed after none and eca finished, re-invoked with se added: only se trains.
    run_dir = tmp_path / "compare"
    shutil.copytree(tiny_compare[0], run_dir)
    before = {path: mtime for path, mtime in _run_files(run_dir).items() if path.parent.name.endswith("seed0")}
    result = run_compare(_tiny_config(run_dir, ("none", "eca", "se")))
    after = _run_files(run_dir)
    assert before, "the finished runs hold files"
    assert {path: after[path] for path in before} == before
    assert any(path.parent.name == "se-seed0" for path in after)
    assert [variant.attention for variant in result.variants] == ["none", "eca", "se"]
    assert [len(history) for variant in result.variants for history in variant.histories] == [1, 1, 1]
    with (run_dir / "results.csv").open() as file:
        assert [row["attention"] for row in csv.DictReader(file)] == ["none", "eca", "se"]


@pytest.mark.slow
def test_other_settings_in_the_same_run_dir_are_refused(tiny_compare, tmp_path):
    run_dir = tmp_path / "compare"
    shutil.copytree(tiny_compare[0], run_dir)
    config = _tiny_config(run_dir, ("none", "eca"))
    for change, name in (({"lr": 0.5}, "'lr'"), ({"epochs": 2}, r"'epochs': \(1, 2\)")):
        changed = dataclasses.replace(config, training=dataclasses.replace(config.training, **change))
        with pytest.raises(ValueError, match=name):
            run_compare(changed)
    # The optimiser's default learning rate left implicit is the preset's explicit 0.1: the same setting.
    implicit = dataclasses.replace(config, training=dataclasses.replace(config.training, lr=None))
    assert [variant.attention for variant in run_compare(implicit).variants] == ["none", "eca"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": 0}, "seeds"),
        ({"attentions": ("none",)}, "at least two"),
        ({"attentions": ("none", "eca", "eca")}, "at least two different"),
        ({"attentions": ("none", "gc")}, "attention must be one of"),
        ({"model": "not_a_model"}, "not a registered"),
        ({"model": "torchvision:resnet18", "attentions": ("none", "cbam")}, "only add ECA"),
        ({"model": "keras:resnet"}, "torchvision:NAME"),
        ({"confidence": 1.0}, "confidence"),
        ({"latency_rounds": 0}, "latency_rounds must be a positive int, got 0"),
        ({"latency_batch_size": 0}, "latency_batch_size must be a positive int, got 0"),
    ],
)
def test_bad_configs_fail_before_training(changes, message, tmp_path):
    config = dataclasses.replace(_tiny_config(tmp_path / "compare", ("none", "eca")), **changes)
    with pytest.raises(ValueError, match=message):
        run_compare(config)
    assert not (tmp_path / "compare").exists()


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"lr": -1.0}, ValueError, "lr must be > 0, got -1.0"),
        ({"warmup_epochs": float("nan")}, ValueError, "warmup_epochs must be a finite number, got nan"),
        ({"data": "cifar10", "data_dir": "no/such/dir"}, FileNotFoundError, "cifar10 not found"),
    ],
)
def test_bad_training_settings_fail_before_anything_is_written(changes, error, message, tmp_path):
    config = _tiny_config(tmp_path / "compare", ("none", "eca"))
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, **changes))
    with pytest.raises(error, match=message):
        run_compare(config)
    assert not (tmp_path / "compare").exists()


@pytest.mark.slow
def test_a_compare_the_trainer_refused_leaves_its_run_dir_usable(tmp_path):
    config = _tiny_config(tmp_path / "compare", ("none", "eca"))
    too_large = dataclasses.replace(config, training=dataclasses.replace(config.training, batch_size=20000))
    with pytest.raises(ValueError, match="exceeds the 12000 training images"):
        run_compare(too_large)
    assert (tmp_path / "compare" / "compare.json").is_file()
    result = run_compare(config)
    assert [len(history) for variant in result.variants for history in variant.histories] == [1, 1]
    with pytest.raises(ValueError, match="'batch_size': \\(32, 20000\\)"):
        run_compare(too_large)


def test_attention_in_model_kwargs_is_refused(tmp_path):
    config = _tiny_config(tmp_path / "compare", ("none", "eca"))
    config.training.model_kwargs["attention"] = "se"
    with pytest.raises(ValueError, match="must not hold 'attention'"):
        run_compare(config)


@pytest.mark.slow
def test_foreign_model_gets_eca_from_add_eca_and_reruns_without_training(tmp_path):
    config = dataclasses.replace(
        _tiny_config(tmp_path / "compare", ("none", "eca")),
        model="timm:resnet10t",
        # A narrow timm ResNet-10: one basic block per stage of 16, 32, 64, 128 channels.
        training=dataclasses.replace(
            _tiny_config(tmp_path, ()).training, model_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16}
        ),
    )
    first = run_compare(config)
    files = _run_files(tmp_path / "compare")
    again = run_compare(config)
    none, eca = first.variants
    # add_eca puts one ECA after every residual block's last BatchNorm, k from the paper's rule.
    assert none.eca_layers == () and [layer.kernel_size for layer in eca.eca_layers] == [3, 3, 3, 5]
    assert eca.params - none.params == sum(layer.kernel_size for layer in eca.eca_layers)
    assert [v.histories for v in again.variants] == [v.histories for v in first.variants]
    changed = {path for path, mtime in _run_files(tmp_path / "compare").items() if files.get(path) != mtime}
    assert {path.name for path in changed} <= {
        "results.csv",
        "report.md",
        *(p.name for p in (tmp_path / "compare").glob("*.png")),
    }
