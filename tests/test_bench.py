"""The benchmark's simulated kernel runs the program as the fake kernel does (the figures in
docs/benchmarks.md come from it): one round, no timing asserted."""

from __future__ import annotations

from bench import kernel_overhead


def test_prepare_and_release_on_the_simulated_kernel_restore_every_shape(tmp_path):
    figures, details = kernel_overhead.measure(tmp_path, rounds=1, warmup=0)
    names = [figure.name for figure in figures]
    assert any("overhead per device" in name for name in names), names
    assert all(value >= 0 for figure in figures for value in figure.values)
