"""Side-by-side speed measurements of this project against its baselines, each printing a table of ratios
measured in one run (BENCHMARKS.md holds the tables, written by `python -m benchmarks.report`):

    python -m benchmarks.losses       the AMCL loss: batched heads vs a per-head loop vs the reference formulation
    python -m benchmarks.loader       the two-view loader vs torchvision + PIL, and FFCV's own one-view floor
    python -m benchmarks.train_step   a full training step vs a re-creation of the reference implementation's step
    python -m benchmarks.scaling      the training step as the heads C and the batch grow
    python -m benchmarks.report       all of the above, into BENCHMARKS.md
    benchmarks/gpu/                   the prepared GPU run (its README says how to run it)

Studies, which train to answer a question rather than time code, live in benchmarks.studies. What the modules
share (the repository root, the process clock, the reference AMCL loss, the test photographs) is in
benchmarks.common.
"""
