"""Losses: AMCL (multi-head, adaptive pair temperature) and the baselines it is compared with."""
from ffcv_amcl.losses.amcl import AMCLBarlowTwins, AMCLContrastive, AMCLSimSiam
from ffcv_amcl.losses.ascl import ascl_loss
from ffcv_amcl.losses.barlow import barlow_twins
from ffcv_amcl.losses.byol import byol_loss, multi_view_byol_loss
from ffcv_amcl.losses.dino import dino_loss
from ffcv_amcl.losses.mochi import mix_hard_negatives
from ffcv_amcl.losses.moco import info_nce_queue
from ffcv_amcl.losses.ntxent import multi_positive_nt_xent, nt_xent
from ffcv_amcl.losses.simsiam import multi_view_negative_cosine, negative_cosine
from ffcv_amcl.losses.vicreg import vicreg_loss

__all__ = ["AMCLContrastive", "AMCLSimSiam", "AMCLBarlowTwins", "nt_xent", "info_nce_queue", "negative_cosine",
           "barlow_twins", "byol_loss", "mix_hard_negatives", "ascl_loss",
           "vicreg_loss", "dino_loss", "multi_positive_nt_xent",
           "multi_view_negative_cosine", "multi_view_byol_loss"]
