"""Data: the synthetic task suite with golden trajectories (`pixelis.data.synth`), dataset IO, benchmarks."""
