import pytest

from ecanet.experiments.plots import plot_accuracy_curves, plot_accuracy_vs_latency, plot_eca_kernel_sizes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("plot", [plot_accuracy_curves, plot_accuracy_vs_latency])
def test_compare_plots_are_png(plot, hand_made_result, tmp_path):
    path = plot(hand_made_result, tmp_path / "plot.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


def test_kernel_size_plot(hand_made_result, tmp_path):
    path = plot_eca_kernel_sizes(hand_made_result.variants[1].eca_layers, tmp_path / "k.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="at least one ECA layer"):
        plot_eca_kernel_sizes((), tmp_path / "none.png")
