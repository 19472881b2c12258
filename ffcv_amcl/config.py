"""Every setting of a training run, declared once with fastargs, and checked before any work starts.

`parse_config(argv)` reads `--config-file x.yaml` (fastargs YAML/JSON, one mapping per section) and
`--section.param=value` overrides (later wins), then rejects what fastargs would silently accept:
unknown keys, values of the wrong kind, impossible combinations, missing .beton files and batches the
dataset cannot fill. It returns a plain nested namespace (`cfg.training.lr`); `to_flat`/`from_flat`
convert it to the flat dict of plain values that checkpoints and `config.json` store.

Names that configs, scripts and other tools rely on (keep them): data.train_dataset, data.val_dataset,
data.num_workers, model.arch, model.method, model.amcl, model.heads, training.epochs,
training.batch_size, training.lr, training.resume, training.seed, logging.folder, eval.knn_every.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from types import SimpleNamespace

from fastargs import Config, Param, Section
from fastargs.dict_utils import expand_keys, fix_dict
from fastargs.validation import Checker

from ffcv_amcl.data.augment.recipe import BLUR_P, LOCAL_SCALE, LOCAL_SIZE_RULE, SOLARIZE_P, default_local_size
from ffcv_amcl.data.augment.spec import AUGS_HELP, view_letters
from ffcv_amcl.evaluation.splits import check_evaluation_splits, knn_train_path
from ffcv_amcl.errors import ArgumentParser, UserError, check, check_input_file, warn
from ffcv_amcl.limits import check_limits
from ffcv_amcl.losses.amcl import DEFAULT_FORM, FORM_TAU_MIN, FORMS
from ffcv_amcl.model.backbone import ARCH_HELP, check_arch
from ffcv_amcl.model.methods import METHODS
from ffcv_amcl.model.methods.base import UNSET


class Choice(Checker):
    """One of a fixed, ordered list of values (fastargs' OneOf prints a set, in random order)."""

    def __init__(self, *values, cast=str):
        self.values, self.cast = values, cast

    def check(self, value):
        value = self.cast(value)
        if value not in self.values:
            raise ValueError(value)
        return value

    def help(self):
        return "one of " + ", ".join(str(v) for v in self.values)


class Flag(Choice):
    def __init__(self):
        super().__init__(0, 1, cast=int)

    def check(self, value):
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = int(value.lower() == "true")
        return super().check(value)

    def help(self):
        return "0 or 1"


class Number(Checker):
    """int or float with bounds; help names the range."""

    def __init__(self, cast=float, low=None, high=None):
        self.cast, self.low, self.high = cast, low, high

    def check(self, value):
        if isinstance(value, bool):
            raise ValueError(value)
        if self.cast is int and isinstance(value, str):  # the command line: read '1.5' as YAML would, then refuse
            try:
                value = int(value)
            except ValueError:
                value = float(value)
        if self.cast is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        value = self.cast(float(value)) if self.cast is int else self.cast(value)
        if not math.isfinite(value):
            raise ValueError(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(value)
        return value

    def help(self):
        kind = "an integer" if self.cast is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"{kind} >= {self.low}"
        return kind


class Text(Checker):
    def check(self, value):
        if value is None or isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)

    def help(self):
        return "a string"


class Pair(Checker):
    """Two floats `lo,hi` with 0 < lo <= hi <= 1 (a crop scale range); YAML list or 'lo,hi' string."""

    def check(self, value):
        lo, hi = self.numbers(value)
        if not 0 < lo <= hi <= 1:
            raise ValueError(value)
        return (lo, hi)

    @staticmethod
    def numbers(value) -> tuple[float, float]:
        if isinstance(value, str):
            value = value.strip("()[] ").split(",")
        a, b = (float(v) for v in value)
        return a, b

    def help(self):
        return "two numbers lo,hi with 0 < lo <= hi <= 1"


class ViewProbabilities(Pair):
    """Two probabilities `a,b`, one per global view (local views take view b's); YAML list or 'a,b' string."""

    def check(self, value):
        a, b = self.numbers(value)
        if not (0 <= a <= 1 and 0 <= b <= 1):
            raise ValueError(value)
        return (a, b)

    def help(self):
        return "two probabilities a,b in [0, 1] (view a, view b)"


def _text(pair) -> str:
    """(0.05, 0.4) -> '0.05,0.4': a pair default as the command line writes it."""
    return ",".join(f"{v:g}" for v in pair)


def integer(default, low=None, high=None, desc=""):
    return Param(Number(int, low, high), desc, default=default)


def number(default, low=None, high=None, desc=""):
    return Param(Number(float, low, high), desc, default=default)


def text(default, desc=""):
    return Param(Text(), desc, default=default)


def choice(default, *values, desc=""):
    return Param(Choice(*values), desc, default=default)


def flag(default, desc=""):
    return Param(Flag(), desc, default=default)


# section -> (description, {name: Param}). Defaults: the reference's CIFAR ResNet-18 recipe (docs/amcl.md) unless
# noted. A setting whose default is the method's or the form's has its values listed by `setting_help`.
SPEC = {
    "data": ("Data", dict(
        train_dataset=Param(Text(), "training .beton (write_datasets.py)", required=True),
        val_dataset=text("", "held-out labelled .beton for the kNN monitor and the online probe ('' = neither)"),
        eval_train_dataset=text("", "labelled .beton the kNN monitor and eval's kNN and linear probe train on ('' = "
                                    "data.train_dataset; set it when the training set is unlabelled, "
                                    "write_datasets.py --cfg.labels=none)"),
        num_workers=integer(-1, -1, desc="FFCV loader threads (-1 = every usable core; more than the usable "
                                        "cores, numba's thread limit, are that many); torch's own threads are "
                                        "training.threads"),
        image_size=integer(32, 8, desc="side of the augmented views, px"),
        augs=text("default", f"augmentations of view a: {AUGS_HELP}"),
        augs_b=text("", "augmentations of view b, as data.augs ('' = the same as data.augs; ASCL: 'ae' = weak key "
                        "view)"),
        crop_scale=Param(Pair(), "random-resized-crop scale range of the two global views", default="0.08,1"),
        local_crops=integer(0, 0, desc="local views per image (multi-crop: 2 global + N local views from one decode; "
                                       "they take view b's augmentations; 0 = the two global views only)"),
        local_size=integer(0, 0, desc=f"side of the local views, px (0 = {LOCAL_SIZE_RULE})"),
        local_scale=Param(Pair(), "random-resized-crop scale range of the local views", default=_text(LOCAL_SCALE)),
        blur_p=Param(ViewProbabilities(), "blur probability (letter b) of view a, view b (BYOL's)",
                     default=_text(BLUR_P)),
        solarize_p=Param(ViewProbabilities(), "solarization probability (letter f) of view a, view b (BYOL's)",
                         default=_text(SOLARIZE_P)),
        color_strength=number(0.5, 0, desc="colour-distortion strength s"),
        order=choice("random", "random", "quasi_random", "sequential", desc="FFCV sample order"),
    )),
    "model": ("Model", dict(
        arch=text("resnet18", f"backbone: {ARCH_HELP}"),
        method=choice("simclr", *METHODS, desc="self-supervised method"),
        amcl=flag(1, "1 = AMCL multi-head adaptive-temperature loss, 0 = the method's classic loss"),
        heads=integer(3, desc="projection heads C"),
        stem=choice("auto", "cifar", "imagenet", "auto", desc="torchvision ResNets: auto = cifar stem for images <= 64 "
                                                              "px"),
        patch_size=integer(0, 0, desc="timm ViTs: patch side, px (0 = the model's; 4 for CIFAR-size images)"),
        proj_dim=integer(0, 0, desc="projection size D (0 = the method's default)"),
        proj_hidden=integer(0, 0, desc="projector hidden size (0 = the method's default)"),
        pred_hidden=integer(0, 0, desc="predictor hidden size, SimSiam/BYOL; DINO's bottleneck (0 = the method's "
                                       "default)"),
    )),
    "training": ("Training", dict(
        epochs=integer(100, 1, desc="epochs"),
        batch_size=integer(512, 2, desc="images per step per process (GPU); at least 2: the losses and batch norm "
                                        "compare the images of a batch"),
        lr=number(0.06, 0, desc="peak learning rate (not rescaled by batch size)"),
        resume=text("auto", "auto = newest valid checkpoint in logging.folder, none (start over), or a .pt path"),
        resume_changed=flag(0, "1 = resume even where settings that shape the run differ from the checkpoint's "
                               "(recorded in metrics.jsonl and config.json's history); 0 = refuse such a resume"),
        overwrite=flag(0, "with resume=none: 1 = delete the checkpoints, metrics and config of an earlier run in "
                          "logging.folder first (otherwise such a folder is refused)"),
        seed=integer(0, 0, desc="seed of weights, augmentations and sample order"),
        threads=integer(0, 0, desc="torch's CPU threads (0 = OMP_NUM_THREADS if set, else the usable cores shared "
                                   "among the processes torchrun starts on the machine); independent of "
                                   "data.num_workers"),
        optimizer=choice("sgd", "sgd", "lars", desc="sgd (momentum) or lars for large batches"),
        momentum=number(0.9, 0, 1, desc="SGD/LARS momentum"),
        weight_decay=number(5e-4, 0, desc="weight decay"),
        exclude_bn_bias=flag(0, "1 = no weight decay (and no LARS scaling) on BN parameters and biases"),
        warmup_epochs=number(0.0, 0, desc="linear warm-up length, epochs"),
        final_lr=number(0.0, 0, desc="learning rate at the end of the cosine"),
        clip_grad=number(1.0, 0, desc="gradient-norm clip (0 = off)"),
        precision=choice("bf16", "fp32", "bf16", "fp16", "fp64",
                         desc="bf16/fp16 = autocast on CUDA (CPU runs fp32); fp64 = float64 reference runs "
                              "(numerics checks)"),
        sync_bn=flag(0, "1 = batch statistics over all processes"),
        checkpoint_every=integer(10, 0, desc="save every N epochs (0 = only at the end)"),
        max_steps=integer(0, 0, desc="stop after this many steps in total (0 = no limit; smoke tests)"),
        device=choice("auto", "auto", "cpu", "cuda", desc="auto = cuda when available"),
        deterministic=flag(0, "1 = deterministic CUDA kernels (CPU runs are deterministic anyway)"),
        compile=flag(0, "1 = torch.compile the backbone+heads (and the loss where it helps); off by default on the "
                        "CPU"),
        log_every=integer(20, 1, desc="steps between progress-bar updates and non-finite checks"),
    )),
    "loss": ("Loss", dict(
        temperature=number(0.0, 0, desc="fixed temperature of the classic losses (0 = the method's default)"),
        beta=number(-1.0, desc="AMCL regulariser weight (-1 = the method's default)"),
        topk=integer(100, 1, desc="AMCL: hardest negatives kept per anchor"),
        tau_min=number(-1.0, desc="AMCL lowest temperature (-1 = the form's default)"),
        tau_max=number(2.0, 0, desc="AMCL highest temperature"),
        tau_hidden=integer(128, 1, desc="AMCL temperature-network hidden size"),
        amcl_form=choice(DEFAULT_FORM, *FORMS, desc="AMCL loss form: ref (the reference code's, unbounded), hetero "
                                                    "(bounded, phi learns from the positives' Gaussian NLL), post "
                                                    "(posterior); docs/amcl.md"),
        nll_dim=number(2.0, 0, desc="hetero form: d of the Gaussian NLL that trains phi (tau+ optimum 2(1-s+)/d)"),
        queue_size=integer(4096, 1, desc="MoCo negatives per head"),
        momentum=number(0.99, 0, 1, desc="MoCo key encoder / BYOL target / DINO teacher EMA momentum (BYOL, "
                                         "DINO: start value, cosine to 1)"),
        barlow_lambda=number(5e-3, 0, desc="Barlow Twins off-diagonal weight"),
        vicreg_sim=number(25.0, 0, desc="VICReg invariance (mean squared error) weight"),
        vicreg_var=number(25.0, 0, desc="VICReg variance (std hinge) weight"),
        vicreg_cov=number(1.0, 0, desc="VICReg covariance (off-diagonal) weight"),
        dino_teacher_temp=number(0.04, 0, desc="DINO teacher temperature after the warm-up (the student's is "
                                               "loss.temperature)"),
        dino_warmup_teacher_temp=number(0.04, 0, desc="DINO teacher temperature at epoch 0"),
        dino_warmup_epochs=integer(0, 0, desc="DINO epochs of linear teacher-temperature warm-up"),
        dino_center_momentum=number(0.9, 0, 1, desc="DINO centre EMA momentum"),
        dino_freeze_last_epochs=integer(1, 0, desc="DINO epochs without gradient into the head's last layer"),
        mochi_n_hard=integer(0, 0, desc="MoCHi: hardest queue negatives to mix (0 = MoCHi off)"),
        mochi_s1=integer(16, desc="MoCHi: negative-negative mixes per query"),
        mochi_s2=integer(16, desc="MoCHi: query-negative mixes per query"),
        mochi_start=integer(0, 0, desc="MoCHi: first epoch with mixing (warm-up)"),
        ascl=flag(0, "1 = ASCL soft targets on the MoCo path"),
        ascl_variant=choice("ascl", "ascl", "ahcl", "hard", desc="ASCL target form"),
        ascl_k=integer(5, 0, desc="ASCL K (weight scale; top-K for ahcl/hard)"),
        ascl_t1=number(0.1, 0, desc="ASCL query temperature"),
        ascl_t2=number(0.05, 0, desc="ASCL key-to-queue temperature"),
    )),
    "logging": ("Logging", dict(
        folder=text("runs/train", "checkpoints, config.json, metrics.jsonl"),
        tensorboard=flag(0, "1 = also write TensorBoard events (needs the tensorboard package)"),
        wandb=flag(0, "1 = also log to Weights & Biases (needs the wandb package; WANDB_MODE=offline works without "
                      "a network)"),
        wandb_project=text("ffcv-amcl", "wandb project"),
        wandb_group=text("", "wandb group ('' = none), e.g. to gather the seeds of one variant"),
    )),
    "eval": ("Evaluation", dict(
        knn_every=integer(10, 0, desc="kNN monitor every N epochs, plus epoch 0 and the last (0 = off)"),
        knn_k=integer(200, 1, desc="kNN neighbours"),
        knn_t=number(0.1, 0, desc="kNN vote temperature"),
        batch_size=integer(512, 1, desc="batch size for feature extraction"),
        image_size=integer(0, 0, desc="evaluation image side (0 = data.image_size)"),
        online_linear=flag(1, "1 = online linear probe: a linear classifier trained on detached features of the "
                              "training views, its validation top-1 logged each epoch (needs data.val_dataset)"),
        online_lr=number(0.1, 0, desc="online linear probe peak lr (SGD, cosine)"),
        linear_epochs=integer(100, 1, desc="linear probe epochs"),
        linear_lr=number(0.1, 0, desc="linear probe peak lr (SGD, cosine)"),
        linear_batch_size=integer(256, 1, desc="linear probe batch size"),
        linear_wd=number(0.0, 0, desc="linear probe weight decay"),
    )),
    "dist": ("Distributed (torchrun sets the world; no launcher here)", dict(
        backend=choice("auto", "auto", "nccl", "gloo", desc="auto = nccl on GPU, gloo on CPU"),
    )),
}

# Settings that do not shape the weights a run trains (where it logs, what it evaluates, how fast and where it
# runs): a resume may change them freely; every other setting must match the checkpoint's (checkpoint
# compatibility), and so must the number of processes. An entry ending in "." covers its whole section.
RESUME_FREE = ("logging.", "eval.", "dist.", "data.num_workers", "data.val_dataset", "data.eval_train_dataset",
               "training.resume",
               "training.resume_changed", "training.overwrite", "training.log_every", "training.checkpoint_every",
               "training.max_steps", "training.device", "training.compile", "training.deterministic",
               "training.threads")


def declare(config: Config | None = None, sections: dict | None = None) -> Config:
    """Register SPEC (or `sections`) on a fresh fastargs Config (not the global one: tests parse often)."""
    config = config or Config()
    for ns, (desc, params) in (sections or SPEC).items():
        Section(ns, desc, config_descriptor=config).params(
            **{name: Param(p.checker, p.desc, default=p.default, required=p.required) for name, p in params.items()})
    return config


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def read_config_file(path: str) -> dict:
    """Flat {section.param: value} from a fastargs YAML or JSON file."""
    p = check_input_file(path, "config file", "check the --config-file path")
    text = p.read_text()
    try:
        tree = json.loads(text)
    except ValueError:
        try:
            import yaml
        except ImportError:
            raise UserError(f"reading {path} needs PyYAML: pip install pyyaml (or give a JSON config)")
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})")
    if tree is None:
        return {}
    check(isinstance(tree, dict), f"config file {path} must map sections to settings (section: {{param: value}})")
    return flatten_settings(tree)


def flatten_settings(tree: dict) -> dict:
    """Flat {section.param: value} of settings given as sections ({section: {param: value}}), dotted keys
    ({section.param: value}) or both, as a config file holds them."""
    return _flatten(fix_dict(expand_keys(tree)))


def setting_names() -> list[str]:
    """Every setting's `section.param` name, in declaration order."""
    return [f"{section}.{name}" for section, (_, params) in SPEC.items() for name in params]


HELP_ARCHS = ("resnet18", "resnet50")   # the archs --help lists per-arch method defaults for


def method_defaults_help(key: str) -> str:
    """'simclr, moco 0.5; ...': what each method's own `defaults` gives a setting left at its UNSET value, per
    model.arch where it depends on it (so --help never repeats the methods' numbers by hand)."""
    base = {f"{s}.{n}": p.default for s, (_, ps) in SPEC.items() for n, p in ps.items()}

    def value(cls) -> str:
        per_arch = {arch: cls.defaults(to_namespace({**base, "model.arch": arch}))[key] for arch in HELP_ARCHS}
        if len(set(per_arch.values())) == 1:
            return f"{per_arch[HELP_ARCHS[0]]:g}"
        return " or ".join(f"{v:g} ({arch})" for arch, v in per_arch.items())

    groups: dict[str, list[str]] = {}
    for name, cls in METHODS.items():
        groups.setdefault(value(cls), []).append(name)
    return "; ".join(f"{', '.join(names)} {v}" for v, names in groups.items())


def setting_help(key: str, param: Param) -> str:
    """One --help line: the setting, its default, its description and, for a default that the method or the
    AMCL form decides, the values they give."""
    line = f"  {key}  [{param.default}]  {param.desc}"
    if key in UNSET:
        return f"{line}: {method_defaults_help(key)}"
    if key == "loss.tau_min":
        return f"{line}: " + ", ".join(f"{form} {value:g}" for form, value in FORM_TAU_MIN.items())
    return line


def parse_argv(argv: list[str] | None = None, *, sections: dict | None = None,
               prog: str = "ffcv-amcl-train") -> tuple[dict, dict]:
    """argv -> (values {section.param: validated value}, explicit {section.param: raw value given by the
    user}). Unknown keys, in files or on the command line, raise UserError naming the key."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = declare(sections=sections)
    known = {".".join(path) for path in config.entries}
    parser = ArgumentParser(prog=prog, allow_abbrev=False, formatter_class=argparse.RawTextHelpFormatter,
                            description=__doc__.split("\n\n")[0],
                            epilog="settings (--section.param=value or a YAML file):\n" + "\n".join(
                                setting_help(".".join(path), p) for path, p in config.entries.items()))
    parser.add_argument("--config-file", "-C", action="append", default=[], help="fastargs YAML/JSON (repeatable)")
    for path in config.entries:
        parser.add_argument("--" + ".".join(path), dest=".".join(path), default=None, help=argparse.SUPPRESS)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        key = next((u for u in unknown if u.startswith("-")), unknown[0]).split("=")[0]
        raise UserError(f"unknown config key '{key.lstrip('-')}' on the command line: check the spelling "
                        f"(--help lists every setting)")
    explicit: dict = {}
    for fname in args.config_file:
        flat = read_config_file(fname)
        for key in flat:
            if key not in known:
                raise UserError(f"unknown config key '{key}' in {fname}: check the spelling "
                                f"(--help lists every setting)")
        explicit.update(flat)
    explicit.update({k: v for k, v in vars(args).items() if k in known and v is not None})
    config.collect({k: v for k, v in explicit.items() if v is not None})
    values = {}
    for path, param in config.entries.items():
        key = ".".join(path)
        raw = config.content.get(path, param.default)
        if raw is None:
            if param.required:
                raise UserError(f"{key} is required: pass --{key}=... or set it in the config file")
            values[key] = None
            continue
        try:
            values[key] = param.checker.check(raw)
        except Exception:
            raise UserError(f"{key}={raw!r} is not valid: expected {param.checker.help()}")
    return values, explicit


def to_namespace(flat: dict) -> SimpleNamespace:
    tree: dict = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        tree.setdefault(section, {})[name] = value
    return SimpleNamespace(**{s: SimpleNamespace(**v) for s, v in tree.items()})


def to_flat(cfg: SimpleNamespace) -> dict:
    """Flat {section.param: plain value}: what config.json and checkpoints hold."""
    out = {}
    for section, ns in vars(cfg).items():
        for name, value in vars(ns).items():
            out[f"{section}.{name}"] = list(value) if isinstance(value, tuple) else value
    return out


def from_flat(flat: dict) -> SimpleNamespace:
    """Inverse of to_flat; fills settings `flat` lacks with today's defaults."""
    values = {f"{s}.{n}": p.default for s, (_, ps) in SPEC.items() for n, p in ps.items()}
    values.update(flat)
    for section, (_, params) in SPEC.items():      # lists (JSON) back to the tuples the checkers give
        for name, param in params.items():
            if isinstance(param.checker, Pair):
                values[f"{section}.{name}"] = param.checker.check(values[f"{section}.{name}"])
    return to_namespace(values)


def resolve(cfg: SimpleNamespace) -> SimpleNamespace:
    """Fill method-dependent defaults (temperature, beta, projection sizes) and the local views' side in place;
    returns cfg.
    Each method class owns its values (ffcv_amcl/model/methods/)."""
    METHODS[cfg.model.method].resolve(cfg)
    if cfg.data.local_size == 0:
        cfg.data.local_size = default_local_size(cfg.data.image_size)
    if cfg.loss.tau_min < 0:
        cfg.loss.tau_min = FORM_TAU_MIN[cfg.loss.amcl_form]
    return cfg


def beton_samples(path: str, what: str) -> int:
    """Number of images in a .beton after checking its tables, its sidecar and a sample of its JPEG images
    (data.beton.validate_beton); UserError when it is absent, foreign, truncated or damaged."""
    return dataset_facts(path, what)["num_samples"]


def dataset_facts(path: str, what: str) -> dict:
    """data.beton.beton_facts of the .beton `what` names (num_samples, image_shape, max_side), after every check."""
    from ffcv_amcl.data.beton import beton_facts

    check(bool(path), f"{what} is empty: pass --{what}=path/to/file.beton (write one with write_datasets.py)")
    return beton_facts(path, what)


def validate(cfg: SimpleNamespace, *, world_size: int = 1, check_files: bool = True) -> dict:
    """Cross-setting checks before any work; returns facts found on the way ({'train_samples': N, ...})."""
    m, t, l, d = cfg.model, cfg.training, cfg.loss, cfg.data
    check_arch(m.arch)
    check(m.heads >= 1, f"model.heads={m.heads}: a run needs at least one projection head (--model.heads=1 or more)")
    view_letters(d.augs, d.augs_b, flags=("data.augs", "data.augs_b"))
    check(d.local_size <= d.image_size, f"data.local_size={d.local_size} is larger than the global views "
                                        f"(data.image_size={d.image_size}): lower --data.local_size (0 = "
                                        f"{LOCAL_SIZE_RULE})")
    check(0 < l.tau_min < l.tau_max, f"loss.tau_min={l.tau_min}, loss.tau_max={l.tau_max}: need 0 < tau_min < tau_max")
    check(l.nll_dim > 0, f"loss.nll_dim={l.nll_dim}: the Gaussian NLL's dimension must be above 0 (default 2)")
    check(not (l.ascl and m.amcl and l.amcl_form == "ref"),
          "ASCL's soft targets need a softmax over the candidates and AMCL's ref form has none: use "
          "--loss.amcl_form=hetero with --loss.ascl=1, or --model.amcl=0")
    METHODS[m.method].check_config(cfg, world_size)
    if t.resume not in ("auto", "none"):
        check_input_file(t.resume, "training.resume=", "give a checkpoint path, auto or none")
    facts, sizes = _file_facts(cfg, world_size) if check_files else ({}, {})
    check_limits(cfg, {**facts, **sizes})
    return facts


def _file_facts(cfg: SimpleNamespace, world_size: int) -> tuple[dict, dict]:
    """({'train_samples', 'eval_train_samples', 'val_samples'}, {'train_max_side', 'eval_max_side'}) of the checked
    .beton files: the training set must hold a step's batch, the evaluations' sets carry labels, and the labelled
    set the kNN votes with and the validation set, as a pair, the same classes and image size."""
    from ffcv_amcl.data.beton import check_pair

    d, t = cfg.data, cfg.training
    train = dataset_facts(d.train_dataset, "data.train_dataset")
    facts, sizes = {"train_samples": train["num_samples"]}, {"train_max_side": train["max_side"]}
    memory = train
    if d.eval_train_dataset:
        memory = dataset_facts(d.eval_train_dataset, "data.eval_train_dataset")
        facts["eval_train_samples"] = memory["num_samples"]
    if d.val_dataset:
        val = dataset_facts(d.val_dataset, "data.val_dataset")
        facts["val_samples"], sizes["eval_max_side"] = val["num_samples"], max(val["max_side"], memory["max_side"])
    global_batch = t.batch_size * world_size
    check(train["num_samples"] >= global_batch,
          f"training.batch_size={t.batch_size} x {world_size} process(es) needs {global_batch} images per "
          f"step but {d.train_dataset} holds {train['num_samples']}: lower --training.batch_size")
    check_evaluation_splits(cfg)
    if d.val_dataset:
        key = "data.eval_train_dataset" if d.eval_train_dataset else "data.train_dataset"
        check_pair(knn_train_path(d), d.val_dataset, (key, "data.val_dataset"))
    return facts, sizes


def parse_config(argv: list[str] | None = None, *, world_size: int | None = None,
                 check_files: bool = True) -> tuple[SimpleNamespace, dict]:
    """argv -> (resolved cfg namespace, facts). Everything a user can get wrong fails here, in one line."""
    from ffcv_amcl.distributed import env_world

    if world_size is None:
        world_size = env_world()[1]
    values, explicit = parse_argv(argv)
    cfg = resolve(to_namespace(values))
    facts = validate(cfg, world_size=world_size, check_files=check_files)
    unmet = unmet_monitors(cfg, explicit, check_files=check_files)
    if unmet and env_world()[0] == 0:
        warn(unmet)
    return cfg, facts


MONITORS = ("eval.knn_every", "eval.online_linear")     # what each needs: a validation set (the probe: labels too)


def unmet_monitors(cfg: SimpleNamespace, asked, *, check_files: bool = True) -> str | None:
    """The one warning line for the monitors `asked` for (settings given explicitly, switched on) that this run
    cannot record; None when there are none."""
    on = [f"{key}={getattr(cfg.eval, key.split('.')[1])}" for key in MONITORS
          if key in asked and getattr(cfg.eval, key.split(".")[1])]
    if on and not cfg.data.val_dataset:
        return (f"{' and '.join(on)} {'need' if len(on) > 1 else 'needs'} data.val_dataset, which is empty: this run "
                f"records {'neither' if len(on) > 1 else 'no such metric'}; pass --data.val_dataset=FILE.beton")
    if "eval.online_linear" in asked and cfg.eval.online_linear and check_files:
        from ffcv_amcl.data.meta import read_meta

        classes = read_meta(cfg.data.train_dataset, "data.train_dataset").get("num_classes") or 0
        if classes < 2:
            return (f"eval.online_linear=1 needs labels of at least 2 classes and data.train_dataset's sidecar lists "
                    f"{classes}: this run has no online probe")
    return None
