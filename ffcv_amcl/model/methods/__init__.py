"""One module per self-supervised method; each class owns its defaults, its checks and its loss.
Adding a method: a new SSLModel subclass in its own module, listed here, plus its rn_configs file."""
from ffcv_amcl.model.methods.barlow_twins import BarlowTwins
from ffcv_amcl.model.methods.base import SSLModel
from ffcv_amcl.model.methods.byol import BYOL
from ffcv_amcl.model.methods.dino import DINO
from ffcv_amcl.model.methods.moco import MoCo
from ffcv_amcl.model.methods.simclr import SimCLR
from ffcv_amcl.model.methods.simsiam import SimSiam
from ffcv_amcl.model.methods.vicreg import VICReg

METHODS = {cls.method: cls for cls in (SimCLR, MoCo, SimSiam, BarlowTwins, BYOL, VICReg, DINO)}

__all__ = ["METHODS", "SSLModel", "SimCLR", "MoCo", "SimSiam", "BYOL", "BarlowTwins", "VICReg", "DINO"]
