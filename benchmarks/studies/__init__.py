"""Studies: trainings and probes that answer a question about the method (docs/amcl.md reports them). The
trainings themselves are comparison plans (rn_configs/compare/, run with python -m ffcv_amcl.compare).

    python -m benchmarks.studies.datasets     the comparison plans' datasets (digits, Fashion-MNIST) as .betons
    python -m benchmarks.studies.phi_probe    where each AMCL form sends the temperatures, phi alone on fixed data
    python -m benchmarks.studies.dino_toy     whether DINO learns a toy it must solve, at two learning rates
"""
