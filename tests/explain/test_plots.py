import dataclasses
import struct

from ecanet.explain import plot_attention, plot_gates_by_class

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])  # width, height from the IHDR chunk


def test_attention_plot_has_a_panel_per_measurement(hand_made_report, tmp_path):
    full = _png_size(plot_attention(hand_made_report, tmp_path / "full.png"))
    se_only = dataclasses.replace(
        hand_made_report,
        layers=tuple(
            dataclasses.replace(layer, kernel=(), frozen_top1_change=None) for layer in hand_made_report.layers
        ),
        all_frozen_top1_change=None,
    )
    bare = _png_size(plot_attention(se_only, tmp_path / "bare.png"))
    assert full[1] > 1.6 * bare[1]  # four panels against two


def test_gates_by_class_plot_has_a_heat_map_per_layer_shown(hand_made_report, tmp_path):
    one = _png_size(plot_gates_by_class(hand_made_report, tmp_path / "one.png", layers=1))
    four = _png_size(plot_gates_by_class(hand_made_report, tmp_path / "four.png"))
    assert four[1] > 2.5 * one[1]
