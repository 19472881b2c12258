"""The epoch monitors a training runs. A monitor is one module with a class that has

    for_model(model) -> monitor | None     # None: the monitor does not apply to this model
    add(out)                               # each step's StepOutput, on the device (no host sync)
    state(reducer) -> dict                 # totals for a mid-epoch checkpoint (plain tensors; a collective)
    load(state)                            # those totals back (rank 0 holds them for all processes)
    finish(reducer) -> (fields, warnings)  # the epoch's record fields (monitoring.names) and warning lines

and one line in MONITORS below; its name there keys its state in a checkpoint.
"""
from __future__ import annotations

from ffcv_amcl.monitoring.health import TemperatureMonitor
from ffcv_amcl.monitoring.separation import SeparationMonitor

MONITORS = {
    "temperature_health": TemperatureMonitor.for_model,
    "separation": SeparationMonitor.for_model,
}


def monitors_for(model) -> dict:
    """{name: monitor} of the registered monitors that apply to `model` (the unwrapped SSLModel)."""
    built = {name: make(model) for name, make in MONITORS.items()}
    return {name: m for name, m in built.items() if m is not None}
