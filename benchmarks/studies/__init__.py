"""Studies: trainings and probes that answer a question about the method (docs/amcl.md reports them).

    python -m benchmarks.studies.amcl_study   every AMCL form against tuned baselines, several seeds, two datasets
    python -m benchmarks.studies.phi_probe    where each AMCL form sends the temperatures, phi alone on fixed data
"""
