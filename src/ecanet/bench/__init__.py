"""Benchmarks: side-by-side timing, the bandwidth floor, layer and model benchmarks."""
