"""Where a run's records go besides metrics.jsonl: TensorBoard (`logging.tensorboard=1`) and Weights & Biases
(`logging.wandb=1`, `logging.wandb_project`, `logging.wandb_group`). Both are optional packages, imported only when
switched on and checked by `check_sinks` before any work.

wandb: the run's flat config is the wandb run's config; each epoch record is logged at step=epoch. The wandb run's
id is kept in the run folder (wandb_id), so a resumed training continues the same wandb run. Without WANDB_DIR the
wandb files go to the run folder; `WANDB_MODE=offline` works without a network (`wandb sync` uploads later).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.errors import UserError
from ffcv_amcl.monitoring.names import EPOCH

WANDB_ID_FILE = "wandb_id"


def check_sinks(cfg) -> None:
    """One line, before any work, when a sink that is switched on cannot be imported."""
    if cfg.logging.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise UserError("logging.tensorboard=1 needs the tensorboard package: pip install tensorboard "
                            "(or --logging.tensorboard=0)")
    if cfg.logging.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("logging.wandb=1 needs the wandb package: pip install wandb (or pip install "
                            "'ffcv-amcl[wandb]'), or --logging.wandb=0")


def open_sinks(cfg, folder: Path, flat: dict) -> list:
    """The sinks cfg.logging switches on, started (rank 0 only)."""
    sinks = []
    if cfg.logging.tensorboard:
        sinks.append(TensorBoardSink(folder))
    if cfg.logging.wandb:
        sinks.append(WandbSink(folder, flat, project=cfg.logging.wandb_project, group=cfg.logging.wandb_group))
    return sinks


class TensorBoardSink:
    """Every numeric field of a record as a scalar at step=epoch, under folder/tensorboard."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(folder / "tensorboard"))

    def write(self, record: dict) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != EPOCH:
                self.writer.add_scalar(key, value, record[EPOCH])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One wandb run per run folder: started, or resumed under the id kept in folder/wandb_id."""

    def __init__(self, folder: Path, flat: dict, *, project: str, group: str):
        import wandb

        id_file = folder / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None     # None: wandb makes one
        try:
            self.run = wandb.init(project=project, group=group or None, id=run_id, resume="allow",
                                  name=folder.resolve().name, dir=None if os.environ.get("WANDB_DIR") else str(folder))
        except wandb.errors.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"wandb could not start ({first}): run `wandb login`, set WANDB_MODE=offline, or "
                            f"--logging.wandb=0")
        if run_id is None:
            with atomic_path(id_file) as tmp:
                tmp.write_text(self.run.id + "\n")
        self.run.config.update(flat, allow_val_change=True)      # a resume under changed settings updates it

    def write(self, record: dict) -> None:
        """The record at step=epoch; a field that is not a number, string or null goes as its JSON text."""
        row = {k: v if v is None or isinstance(v, (int, float, str)) else json.dumps(v) for k, v in record.items()}
        self.run.log(row, step=int(record[EPOCH]))

    def close(self) -> None:
        self.run.finish()
