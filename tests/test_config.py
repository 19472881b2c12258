"""Settings: parsing, method defaults, and every bad input failing before work with one line."""
import json
from pathlib import Path

import pytest

from ffcv_amcl.config import SPEC, from_flat, parse_argv, parse_config, to_flat
from ffcv_amcl.errors import UserError
from tests.train_helpers import REPO, digits_betons, run_cli

FIXED_NAMES = ["data.train_dataset", "data.val_dataset", "data.num_workers", "model.arch", "model.method",
               "model.amcl", "model.heads", "training.epochs", "training.batch_size", "training.lr",
               "training.resume", "training.seed", "logging.folder", "eval.knn_every"]
MOCHI_ASCL_NAMES = ["loss.mochi_n_hard", "loss.mochi_s1", "loss.mochi_s2", "loss.mochi_start", "loss.ascl",
                "loss.ascl_variant", "loss.ascl_k", "loss.ascl_t1", "loss.ascl_t2"]


@pytest.fixture(scope="module")
def betons(tmp_path_factory):
    return digits_betons(str(tmp_path_factory.mktemp("digits")), 64, 40)


def parse(*args, **kw):
    return parse_config(["--data.train_dataset=x.beton", *args], check_files=False, world_size=1, **kw)[0]


def test_contract_names_exist():
    declared = {f"{s}.{n}" for s, (_, params) in SPEC.items() for n in params}
    assert set(FIXED_NAMES + MOCHI_ASCL_NAMES) <= declared


def test_cli_overrides_file_and_values_are_typed(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"training": {"lr": 0.5, "epochs": 3}, "model": {"method": "moco"},
                             "data": {"crop_scale": [0.3, 1.0]}}))
    cfg = parse("--config-file", str(f), "--training.lr=0.25")
    assert cfg.training.lr == 0.25 and cfg.training.epochs == 3 and cfg.model.method == "moco"
    assert cfg.data.crop_scale == (0.3, 1.0)
    assert parse("--data.crop_scale=0.2,0.9").data.crop_scale == (0.2, 0.9)


def test_yaml_config_file(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  method: simsiam\n  heads: 2\ntraining:\n  weight_decay: 1e-4\n")
    cfg = parse("--config-file", str(f))
    assert (cfg.model.method, cfg.model.heads, cfg.training.weight_decay) == ("simsiam", 2, 1e-4)


def _help_lines(capsys) -> dict:
    with pytest.raises(SystemExit):
        parse_argv(["--help"])
    return {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}


def test_help_shows_the_values_the_methods_and_forms_give(capsys, monkeypatch):
    """The help of a 'method default' setting lists each method class's own `defaults`, so a method that changes
    its default changes the help; the same for the AMCL forms' tau_min."""
    from ffcv_amcl.losses import amcl
    from ffcv_amcl.model.methods import METHODS

    moco = METHODS["moco"]
    real = moco.defaults.__func__
    monkeypatch.setattr(moco, "defaults", classmethod(lambda cls, cfg: {**real(cls, cfg), "loss.temperature": 0.37}))
    monkeypatch.setitem(amcl.FORM_TAU_MIN, "post", 0.031)
    lines = _help_lines(capsys)
    assert "moco 0.37" in lines["loss.temperature"] and "simclr" in lines["loss.temperature"]
    assert "post 0.031" in lines["loss.tau_min"]
    assert "barlow_twins 1e-06" in lines["loss.beta"]                      # BarlowTwins.defaults's own beta
    assert "512 (resnet18) or 2048 (resnet50)" in lines["model.proj_hidden"]   # SimCLR's: the backbone's width
    assert "none = no augmentation" in lines["data.augs"]


@pytest.mark.parametrize("augs", ["none", "all", "color", "colour", "ACD", "", "default"])
def test_every_augs_name_is_a_valid_setting(augs):
    from ffcv_amcl.data.augment.spec import parse_augs

    cfg = parse(f"--data.augs={augs}", f"--data.augs_b={augs}")
    assert cfg.data.augs == augs and parse_augs(cfg.data.augs) <= set("abcdef")


@pytest.mark.parametrize("method,temperature,beta,dim", [("simclr", 0.5, 1e-4, 128), ("moco", 0.1, 1e-4, 128),
                                                         ("simsiam", 0.5, 1e-4, 2048),
                                                         ("barlow_twins", 0.5, 1e-6, 2048)])
def test_method_defaults_follow_the_spec(method, temperature, beta, dim):
    cfg = parse(f"--model.method={method}")
    assert cfg.loss.beta == beta and cfg.model.proj_dim == dim
    if method in ("simclr", "moco"):
        assert cfg.loss.temperature == temperature
    assert parse(f"--model.method={method}", "--loss.beta=0.5").loss.beta == 0.5


def test_flat_round_trip():
    cfg = parse("--model.method=byol", "--data.crop_scale=0.3,1", "--data.blur_p=0.9,0.3", "--data.local_scale=0.1,0.5")
    assert (cfg.data.blur_p, cfg.data.solarize_p, cfg.data.local_scale) == ((0.9, 0.3), (0.0, 0.2), (0.1, 0.5))
    flat = to_flat(cfg)
    assert all(isinstance(v, (str, int, float, list, type(None))) for v in flat.values())
    assert to_flat(from_flat(json.loads(json.dumps(flat)))) == flat


@pytest.mark.parametrize("image_size,local_size", [(224, 96), (96, 40), (32, 16), (24, 8), (8, 8)])
def test_local_views_side_follows_the_global_side(image_size, local_size):
    assert parse(f"--data.image_size={image_size}").data.local_size == local_size
    assert parse(f"--data.image_size={image_size}", "--data.local_size=6").data.local_size == 6


@pytest.mark.parametrize("args,needle", [
    (["--trainig.lr=0.1"], "unknown config key 'trainig.lr'"),
    (["--model.method=swav"], "model.method='swav'"),
    (["--model.method=dino"], "DINO's loss compares distributions"),
    (["--model.method=vicreg"], "VICReg has no AMCL form"),
    (["--model.arch=vgg16"], "model.arch='vgg16'"),
    (["--model.heads=0"], "model.heads=0"),
    (["--model.amcl=2"], "model.amcl='2'"),
    (["--training.lr=fast"], "training.lr='fast'"),
    (["--data.crop_scale=0.5,0.2"], "data.crop_scale"),
    (["--data.augs=xyz"], "data.augs='xyz'"),
    (["--data.local_size=40"], "data.local_size=40 is larger than the global views (data.image_size=32)"),
    (["--data.local_crops=-1"], "data.local_crops='-1'"),
    (["--data.local_scale=0,0.4"], "data.local_scale"),
    (["--data.blur_p=1.2,0.1"], "data.blur_p"),
    (["--data.solarize_p=0.2"], "data.solarize_p"),
    (["--model.method=moco", "--loss.mochi_n_hard=5000"], "loss.mochi_n_hard=5000 exceeds"),
    (["--model.method=moco", "--loss.mochi_n_hard=8", "--loss.mochi_s1=-1"], "mochi_s1=-1"),
    (["--model.method=moco", "--model.amcl=0", "--loss.ascl=1", "--loss.ascl_variant=soft"], "loss.ascl_variant"),
    (["--model.method=simclr", "--loss.ascl=1", "--model.amcl=0"], "MoCo path"),
    (["--model.method=moco", "--loss.ascl=1", "--model.amcl=1", "--loss.amcl_form=ref"], "--model.amcl=0"),
    (["--model.method=simsiam", "--model.amcl=1", "--loss.amcl_form=post"], "loss.amcl_form=post needs negatives"),
    (["--loss.amcl_form=soft"], "loss.amcl_form='soft'"),
    (["--loss.nll_dim=0"], "loss.nll_dim=0"),
    (["--model.method=moco", "--loss.ascl=1", "--model.amcl=1", "--loss.topk=1"], "at least 2 candidates"),
    (["--model.method=moco", "--loss.ascl=1", "--model.amcl=1", "--loss.ascl_variant=hard", "--loss.ascl_k=500"],
     "loss.ascl_k=500"),
    (["--loss.tau_min=0.5", "--loss.tau_max=0.2"], "need 0 < tau_min < tau_max"),
    (["--model.method=moco", "--loss.queue_size=16", "--training.batch_size=32"], "loss.queue_size=16"),
    (["--training.resume=/no/such.pt"], "training.resume=/no/such.pt not found"),
])
def test_bad_settings_name_the_cause(args, needle):
    with pytest.raises(UserError) as err:
        parse(*args)
    assert needle in str(err.value) and "\n" not in str(err.value)


MOCHI = ["--model.method=moco", "--loss.mochi_n_hard=64", "--training.batch_size=16"]


def test_settings_that_size_a_step_are_bounded_by_what_they_multiply(betons):
    """MoCHi's mixes per query may not outnumber the queue, nor the views' side 4x the stored images': a setting
    that would grow the step until it fills the machine is one line naming its bound; the bound itself passes."""
    with pytest.raises(UserError) as err:
        parse(*MOCHI, "--loss.mochi_s1=100000")
    assert str(err.value) == ("loss.mochi_s1 + loss.mochi_s2 = 100016 exceeds loss.queue_size=4096 (MoCHi's mixed "
                              "negatives per query may not outnumber the queue's real ones): lower them to at "
                              "most 4096")
    assert parse(*MOCHI, "--loss.mochi_s1=4000", "--loss.mochi_s2=96").loss.mochi_s1 == 4000
    with pytest.raises(UserError, match=r"^data.image_size=1024 exceeds 128 = 4 x the largest stored image side "
                                        r"\(32 px\): lower it to at most 128$"):
        parse_config([f"--data.train_dataset={betons[0]}", "--data.image_size=1024", "--training.batch_size=8"],
                     world_size=1)
    with pytest.raises(UserError, match=r"^model.proj_dim=300000 exceeds 262144, the widest layer"):
        parse("--model.proj_dim=300000")
    assert parse("--model.method=dino", "--model.heads=1", "--model.amcl=0").model.proj_dim == 65536  # DINO fits


@pytest.mark.parametrize("flags,needs", [
    (["--eval.online_linear=1", "--eval.knn_every=1"], "eval.knn_every=1 and eval.online_linear=1 need "
                                                       "data.val_dataset, which is empty: this run records neither"),
    (["--eval.knn_every=5"], "eval.knn_every=5 needs data.val_dataset, which is empty"),
])
def test_monitors_asked_for_without_what_they_need_warn_once(capsys, flags, needs):
    parse("--data.val_dataset=", *flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {needs}"), err
    parse("--data.val_dataset=")                           # the defaults ask for nothing: no warning
    assert capsys.readouterr().err == ""


def test_unknown_key_in_config_file(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"training": {"lr": 0.1, "epoch": 3}}))
    with pytest.raises(UserError, match=r"unknown config key 'training.epoch' in .*c.json"):
        parse("--config-file", str(f))
    f.write_text(json.dumps({"optim": {"lr": 0.1}}))
    with pytest.raises(UserError, match="unknown config key 'optim.lr'"):
        parse("--config-file", str(f))


def test_missing_and_too_small_datasets(betons, tmp_path):
    train, val = betons
    with pytest.raises(UserError, match="data.train_dataset .*nope.beton not found"):
        parse_config([f"--data.train_dataset={tmp_path}/nope.beton"], world_size=1)
    with pytest.raises(UserError, match="data.val_dataset .*nope.beton not found"):
        parse_config([f"--data.train_dataset={train}", f"--data.val_dataset={tmp_path}/nope.beton"], world_size=1)
    junk = tmp_path / "junk.beton"
    junk.write_bytes(b"not a beton at all" * 10)
    with pytest.raises(UserError, match="not a readable .beton"):
        parse_config([f"--data.train_dataset={junk}"], world_size=1)
    # 64 images: a batch of 64 fits one process, not two; 65 never.
    cfg, facts = parse_config([f"--data.train_dataset={train}", "--training.batch_size=64"], world_size=1)
    assert facts["train_samples"] == 64
    with pytest.raises(UserError, match="training.batch_size=64 x 2 process"):
        parse_config([f"--data.train_dataset={train}", "--training.batch_size=64"], world_size=2)
    with pytest.raises(UserError, match="training.batch_size=65"):
        parse_config([f"--data.train_dataset={train}", "--training.batch_size=65"], world_size=1)


def test_every_shipped_config_parses():
    pytest.importorskip("yaml")
    files = sorted((REPO / "rn_configs").glob("*.yaml"))
    names = {f.name for f in files}
    for ds in ("cifar10", "cifar100"):
        for m in ("simclr", "moco", "simsiam", "barlow_twins"):
            assert f"rn18_{ds}_{m}_amcl.yaml" in names
    assert {"rn50_imagenet_simclr_amcl.yaml", "digits_quickstart.yaml", "rn18_cifar10_mochi.yaml",
            "rn18_cifar10_ascl.yaml", "rn18_cifar10_byol.yaml"} <= names
    for f in files:
        cfg = parse_config(["--config-file", str(f)], check_files=False, world_size=1)[0]
        if "_amcl" in f.name:
            assert cfg.model.amcl == 1 and cfg.model.method in f.name
    mochi = parse_config(["--config-file", str(REPO / "rn_configs/rn18_cifar10_mochi.yaml")], check_files=False)[0]
    assert mochi.loss.mochi_n_hard > 0 and mochi.model.method == "moco"
    ascl = parse_config(["--config-file", str(REPO / "rn_configs/rn18_cifar10_ascl.yaml")], check_files=False)[0]
    assert ascl.loss.ascl == 1 and ascl.data.augs_b == "ae"


# -- the command line: one line on stderr, exit 2, nothing written ----------------------------------------

BAD_FLAGS = [
    (["--model.method=swav"], "model.method"),
    (["--model.arch=resnet35"], "model.arch"),
    (["--model.arch=timm:no_such_net"], "timm has no model"),
    (["--model.heads=0"], "model.heads"),
    (["--training.batch_size=999"], "training.batch_size=999"),
    (["--training.epochs=1.5"], "training.epochs='1.5' is not valid: expected an integer"),  # as YAML 1.5 is
    (["--trainig.epochs=1"], "unknown config key 'trainig.epochs'"),
    (["--data.train_dataset=missing.beton"], "missing.beton not found"),
    (["--training.batch_size=1"], "training.batch_size='1' is not valid: expected an integer >= 2"),
]


@pytest.mark.parametrize("flags,needle", BAD_FLAGS)
def test_train_main_rejects_bad_input_before_training(betons, tmp_path, capsys, flags, needle):
    from ffcv_amcl.train import main

    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main([f"--data.train_dataset={betons[0]}", f"--logging.folder={folder}", *flags])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not folder.exists()


@pytest.mark.parametrize("flags,needle", [BAD_FLAGS[0], BAD_FLAGS[4], BAD_FLAGS[5]])
def test_cli_subprocess_prints_one_line_and_exits_2(betons, tmp_path, flags, needle):
    folder = tmp_path / "run"
    proc = run_cli("ffcv_amcl.train", f"--data.train_dataset={betons[0]}", f"--logging.folder={folder}", *flags,
                   timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not folder.exists()
