"""Benchmarks of the pipeline on a synthetic mirror of the real UCF101 clip list.

`python -m bench` (`make bench`) runs them all and prints one markdown table; `--quick` runs
each on a tiny mirror. One module per benchmark (`extract`, `shards`, `train`, `evaluate`,
`demo`, `gpu`, `ddp`, `sweep`), each with `run(ctx) -> list[Row]`; `common` holds what they
share. `accuracy` (`make accuracy`) is separate: model accuracy on real skeletons, not speed;
`gpu_check` (`make gpu-check`) checks the CUDA paths on a machine with GPUs.
"""
