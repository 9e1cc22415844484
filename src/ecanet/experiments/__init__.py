"""Experiments: compare attention choices on one backbone (accuracy over seeds and inference cost).

Example::

    from ecanet.experiments import compare_preset, format_table, run_compare, summary_rows

    result = run_compare(compare_preset("demo"))
    print(format_table(summary_rows(result)))
"""

from ecanet.experiments.compare import CompareConfig, run_compare, write_outputs
from ecanet.experiments.presets import PRESETS, compare_preset, with_model
from ecanet.experiments.report import format_table, summary_rows
from ecanet.experiments.results import CompareResult, EcaLayer, VariantResult
from ecanet.experiments.statistics import (
    MedianInterval,
    PairedDifference,
    mean_std,
    median_interval,
    paired_difference,
    student_t_quantile,
)

__all__ = [
    "PRESETS",
    "CompareConfig",
    "CompareResult",
    "EcaLayer",
    "MedianInterval",
    "PairedDifference",
    "VariantResult",
    "compare_preset",
    "format_table",
    "mean_std",
    "median_interval",
    "paired_difference",
    "run_compare",
    "student_t_quantile",
    "summary_rows",
    "with_model",
    "write_outputs",
]
