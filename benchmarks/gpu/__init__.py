"""The prepared GPU run: benchmarks/gpu/run.sh and its Python stages (benchmarks.gpu.stages); README.md beside
them says how to run it."""
