"""check_compatible, the one checkpoint-compatibility check, fed each kind of mismatch in both modes."""
import pytest

from ffcv_amcl.compatibility import MODEL_KEYS, RESUME, WEIGHTS, check_compatible
from ffcv_amcl.config import SPEC
from ffcv_amcl.errors import UserError

DEFAULTS = {f"{s}.{n}": p.default for s, (_, params) in SPEC.items() for n, p in params.items()}
DEFAULTS.update({"data.train_dataset": "train.beton", "data.crop_scale": [0.08, 1.0], "world_size": 1})
# What may change on a resume, written out from the brief: where the run logs, what it evaluates, how fast and
# where it runs. Every other setting shapes the run.
FREE_SECTIONS = ("logging.", "eval.", "dist.")
FREE = {"data.num_workers", "data.val_dataset", "data.eval_train_dataset", "training.resume",
        "training.resume_changed", "training.overwrite", "training.log_every", "training.checkpoint_every", "training.max_steps", "training.device",
        "training.compile", "training.deterministic", "training.threads"}


def other(value):
    """A different value of the same kind."""
    if isinstance(value, bool) or value in (0, 1) and isinstance(value, int):
        return 1 - int(value)
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [0.5, 1.0]
    return f"{value}x"


def check(current, mode, allow=False):
    return check_compatible(DEFAULTS, current, mode, source="checkpoint c.pt", fix="do X", allow_changed=allow)


def free(key):
    return key.startswith(FREE_SECTIONS) or key in FREE


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_each_setting_in_both_modes(key):
    changed = {**DEFAULTS, key: other(DEFAULTS[key])}
    line = f"{key}: checkpoint {DEFAULTS[key]!r}, now {changed[key]!r}"
    if key in MODEL_KEYS:                         # the weights do not fit: refused in both modes, always
        for mode, allow in ((WEIGHTS, False), (RESUME, False), (RESUME, True)):
            with pytest.raises(UserError) as err:
                check(changed, mode, allow)
            assert str(err.value) == f"checkpoint c.pt does not fit these settings ({line}): do X"
        return
    assert check(changed, WEIGHTS) == {}          # eval, plots, profile, export: only the weights matter
    if free(key):
        assert check(changed, RESUME) == {}
        return
    with pytest.raises(UserError) as err:
        check(changed, RESUME)
    assert str(err.value) == (f"checkpoint c.pt was trained under other settings ({line}): rerun with the "
                              f"checkpoint's settings, continue under the new ones on purpose with "
                              f"--training.resume_changed=1, or do X")
    assert check(changed, RESUME, allow=True) == {key: [DEFAULTS[key], changed[key]]}


def test_the_run_shaping_kinds_the_brief_names_are_all_compared():
    kinds = ["data.train_dataset", "training.batch_size", "training.epochs", "training.lr", "training.warmup_epochs",
             "training.seed", "data.augs", "data.crop_scale", "loss.amcl_form", "loss.topk", "world_size"]
    assert not any(free(k) or k in MODEL_KEYS for k in kinds)
    current = {**DEFAULTS, **{k: other(DEFAULTS[k]) for k in kinds}}
    with pytest.raises(UserError) as err:
        check(current, RESUME)
    msg = str(err.value)
    assert "\n" not in msg
    listed = msg.split("(", 1)[1].split("): rerun", 1)[0].split("; ")
    assert [part.split(":")[0] for part in listed] == [k for k in current if k in kinds]   # every one, once


def test_only_what_both_sides_hold_is_compared():
    """A setting the checkpoint predates (with no legacy value) or that the caller does not give is not a
    difference: eval compares only the flags it was given."""
    saved = {k: v for k, v in DEFAULTS.items() if k != "training.lr"}
    assert check_compatible(saved, {**DEFAULTS, "training.lr": 9.0}, RESUME, source="c", fix="f") == {}
    assert check_compatible(DEFAULTS, {"model.heads": DEFAULTS["model.heads"]}, WEIGHTS, source="c", fix="f") == {}
    with pytest.raises(UserError, match="model.heads: checkpoint 3, now 5"):
        check_compatible(DEFAULTS, {"model.heads": 5}, WEIGHTS, source="c", fix="f")


def test_an_unknown_mode_is_a_programming_error():
    with pytest.raises(ValueError):
        check_compatible(DEFAULTS, DEFAULTS, "resuem", source="c", fix="f")
