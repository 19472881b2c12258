"""`data.augs` / `data.augs_b` / preview's `--augs`: one reader (augment.spec.view_letters), so a string such as
`none`, `all` or `color` means the same to train, profile and preview."""
import numpy as np
import pytest
import torch

from ffcv_amcl.errors import UserError


def _train_args(path, folder, augs, augs_b=""):
    return [f"--data.train_dataset={path}", "--data.val_dataset=", f"--data.augs={augs}", f"--data.augs_b={augs_b}",
            "--data.order=sequential", "--data.num_workers=1", "--training.batch_size=16", "--training.device=cpu",
            f"--logging.folder={folder}"]


def _first_views(cfg):
    """The first batch's two views as the trainer's loader gives them (normalised, NCHW)."""
    from ffcv_amcl import distributed as dist
    from ffcv_amcl.run_state import make_loaders

    view_a, view_b, _ = next(iter(make_loaders(cfg, dist.DistInfo(device=torch.device("cpu")))[0]))
    return view_a, view_b


@pytest.mark.parametrize("augs,augs_b", [("none", ""), ("all", ""), ("color", ""), ("acd", "none")])
def test_an_augs_string_means_the_same_to_train_profile_and_preview(small_beton, tmp_path, augs, augs_b):
    """The first 16 images' views from the trainer's loader, the profiler's and preview's, for the same seed and
    epoch: the same pixels (the trainer's normalised with the sidecar's mean and std)."""
    from ffcv_amcl.config import parse_config
    from ffcv_amcl.data.meta import read_meta
    from ffcv_amcl.data.preview import collect
    from ffcv_amcl.profile import parse_profile_config

    path = small_beton[0]
    args = _train_args(path, tmp_path, augs, augs_b)
    train_cfg, _ = parse_config(args, world_size=1)
    profile_cfg, _ = parse_profile_config(args)
    _, preview_a, preview_b = collect(path, augs, 16, 32, seed=0, epoch=0, augs_b=augs_b)
    meta = read_meta(path)
    mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])
    for cfg in (train_cfg, profile_cfg):
        for got, want in zip(_first_views(cfg), (preview_a, preview_b)):
            expected = torch.from_numpy((want.astype(np.float64) - mean) / std).permute(0, 3, 1, 2).float()
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    if augs == "none":
        np.testing.assert_array_equal(preview_a, small_beton[1][:16])      # no augmentation: the stored images
    if augs_b == "none":
        np.testing.assert_array_equal(preview_b, small_beton[1][:16])


@pytest.mark.parametrize("flag,value", [("data.augs", "axz"), ("data.augs_b", "q")])
def test_a_bad_augs_string_is_refused_by_train_and_profile_alike(small_beton, tmp_path, flag, value):
    from ffcv_amcl.config import parse_config
    from ffcv_amcl.profile import parse_profile_config

    args = [*_train_args(small_beton[0], tmp_path, "default"), f"--{flag}={value}"]
    messages = []
    for parse in (lambda: parse_config(args, world_size=1), lambda: parse_profile_config(args)):
        with pytest.raises(UserError) as err:
            parse()
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]
    assert f"--{flag}='{value}'" in messages[0] and "none" in messages[0], messages[0]


def test_multi_crop_views_reach_the_trainer_as_preview_shows_them(small_beton, tmp_path):
    """Three local views of 16 px: the trainer's loader yields (view_a, view_b, labels, local_views), local_views
    (3 * 16, 3, 16, 16) channels_last and local-view-major (every image's first local view, then every image's
    second ...), normalised like the global views, the pixels preview draws; the global views are those of the
    two-view loader (local crops shift no stream)."""
    from ffcv_amcl import distributed as dist
    from ffcv_amcl.config import parse_config
    from ffcv_amcl.data.meta import read_meta
    from ffcv_amcl.data.preview import collect
    from ffcv_amcl.run_state import make_loaders

    path = small_beton[0]
    cfg, _ = parse_config(_train_args(path, tmp_path, "all"), world_size=1)
    cfg.data.local_crops, cfg.data.local_size = 3, 16    # set after validation: the loader alone, whatever method
    batch = next(iter(make_loaders(cfg, dist.DistInfo(device=torch.device("cpu")))[0]))
    assert len(batch) == 4
    view_a, view_b, labels, local = batch
    assert local.shape == (3 * 16, 3, 16, 16) and local.dtype == view_a.dtype == torch.float32
    assert local.is_contiguous(memory_format=torch.channels_last) and labels.tolist() == list(range(16))
    _, two_a, two_b = collect(path, "all", 16, 32, seed=0, epoch=0)
    _, multi_a, multi_b, *locals_ = collect(path, "all", 16, 32, seed=0, epoch=0, local_crops=3, local_size=16)
    np.testing.assert_array_equal(multi_a, two_a)
    np.testing.assert_array_equal(multi_b, two_b)
    meta = read_meta(path)
    mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])
    for got, want in ((view_a, two_a), (view_b, two_b), (local, np.concatenate(locals_))):
        expected = torch.from_numpy((want.astype(np.float64) - mean) / std).permute(0, 3, 1, 2).float()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
