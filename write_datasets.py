"""Convert CIFAR-10/100, an ImageFolder tree or the embedded digits to an FFCV .beton (+ .beton.json sidecar).

    python write_datasets.py --cfg.dataset=digits --cfg.split=train --cfg.write_path=digits_train.beton
    python write_datasets.py --cfg.dataset=cifar10 --cfg.data_dir=~/data --cfg.split=test \
        --cfg.write_path=c10_test.beton
    python write_datasets.py --config-file=imagenet.yaml --cfg.split=val
    python write_datasets.py --cfg.dataset=imagefolder --cfg.labels=none --cfg.data_dir=~/photos --cfg.split=. \
        --cfg.write_path=photos.beton        # any tree of images, no classes (label -1)

Flags follow FFCV's ImageNet example (section `cfg`); a YAML/JSON file given with --config-file
supplies the same keys, and command-line flags override it.
"""
from __future__ import annotations

import os
import sys

from fastargs import Param, Section, get_current_config
from fastargs.decorators import param, section
from fastargs.exceptions import MissingValueError

from ffcv_amcl.atomic import remove_stale_temps
from ffcv_amcl.errors import ArgumentParser, UserError, check_writable_dir, cli

Section("cfg", "dataset conversion").params(
    dataset=Param(str, "cifar10 | cifar100 | imagefolder | digits", default="digits"),
    data_dir=Param(str, "source folder (CIFAR: holds cifar-10-batches-py/ or cifar-100-python/; "
                        "imagefolder: holds <split>/<class>/); unused for digits", default=""),
    split=Param(str, "train | test (CIFAR, digits); the sub-folder name (e.g. train, val) for imagefolder "
                     "(. = cfg.data_dir itself)", required=True),
    labels=Param(str, "classes (imagefolder: one class per sub-folder) | none (imagefolder: every image of any "
                      "tree, nested or flat, stored unlabelled with label -1)", default="classes"),
    write_path=Param(str, "the .beton to write (its directory must exist)", required=True),
    write_mode=Param(str, "raw | jpg | proportion (compress_probability of the images as JPEG) | smart "
                          "(FFCV's; with no size threshold set it stores raw)", default="raw"),
    max_resolution=Param(int, "shrink the longer image side to this many pixels (-1 = keep)", default=-1),
    jpeg_quality=Param(int, "JPEG quality 1-100 (jpg, proportion, smart)", default=90),
    compress_probability=Param(float, "fraction stored as JPEG in proportion mode", default=0.5),
    num_workers=Param(int, "writer processes (-1 = one per CPU core)", default=-1),
    subset=Param(int, "write this many images, a fixed-seed random choice (-1 = all)", default=-1),
)


@section("cfg")
@param("dataset")
@param("data_dir")
@param("split")
@param("write_path")
@param("write_mode")
@param("max_resolution")
@param("jpeg_quality")
@param("compress_probability")
@param("num_workers")
@param("subset")
@param("labels")
def convert(dataset, data_dir, split, write_path, write_mode, max_resolution, jpeg_quality,
            compress_probability, num_workers, subset, labels):
    from ffcv_amcl.data.sources import open_source
    from ffcv_amcl.data.write import write_beton

    if subset == 0 or subset < -1:
        raise UserError(f"cfg.subset={subset}: give a positive number of images, or -1 for all")
    write_path = os.path.expanduser(write_path)
    # Refuse an impossible destination before reading 50,000 images; clear what killed writers left there.
    parent = os.path.dirname(os.path.abspath(write_path))
    check_writable_dir(parent, f"cfg.write_path={write_path}")
    for stale in remove_stale_temps(parent):
        print(f"note: removed {stale}, left by a writer that was killed", file=sys.stderr)
    source, meta = open_source(dataset, os.path.expanduser(data_dir), split,
                               max_resolution=max_resolution if max_resolution > 0 else None, subset=subset,
                               labels=labels)
    meta = write_beton(write_path, source, write_mode=write_mode,
                       max_resolution=max_resolution if max_resolution > 0 else None,
                       jpeg_quality=jpeg_quality, compress_probability=compress_probability,
                       num_workers=num_workers, meta=meta)
    classes = f"{meta['num_classes']} classes" if meta["labelled"] else "unlabelled"
    print(f"{meta['dataset']} {meta['split']}: {meta['num_samples']} images, {classes}, "
          f"mean {[round(m, 2) for m in meta['mean']]}, std {[round(s, 2) for s in meta['std']]}")


def _collect(config) -> None:
    parser = ArgumentParser(description="Convert a dataset to an FFCV .beton file.")
    try:  # augment_argparse already reads --config-file (to list its keys in --help)
        config.augment_argparse(parser)
        config.collect_argparse_args(parser)
    except UserError:  # a bad or unknown flag, from the parser
        raise
    except ImportError:
        raise UserError("a YAML --config-file needs PyYAML (pip install pyyaml); or give the config as JSON") from None
    except OSError as exc:
        raise UserError(f"cannot read --config-file {exc.filename}: {exc.strerror}") from None
    except Exception as exc:  # parse errors from the json/yaml readers
        raise UserError(f"cannot parse --config-file: {type(exc).__name__}: {exc}") from None
    errors = config.validate(mode="errordict")
    for path, err in errors.items():
        name = "--" + ".".join(path)
        if isinstance(err, MissingValueError):
            raise UserError(f"{name} is required: {config.entries[path].desc}")
        raise UserError(f"{name}={config.content.get(path)!r} is not {config.entries[path].checker.help()}")


@cli
def main() -> int:
    config = get_current_config()
    _collect(config)
    config.summary(sys.stdout)
    convert()
    return 0


if __name__ == "__main__":
    main()
