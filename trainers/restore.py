"""Trained models back out: a trial's checkpoint location and config in, the built `nn.Module` out.

trainers import neither `db` nor `orchestrator` (DESIGN.md's map), so nothing here knows a trial
id or a database: the caller looks up the trial's `checkpoint_uri` and `config` (through
`db.queries.trial_details`) and passes them in. `resweep.open(URL).model(trial_id)` and
`python -m orchestrator model TRIAL_ID` are those callers.

A checkpoint is the directory Ray Tune saved (see trainers/trainable.py: `checkpoint.pt` holding
the loop's state, the RNG states and the config), on the local filesystem or in an object store
(`s3://...`, read through pyarrow's filesystems, as Tune wrote it). `model_file` packs what a
user needs into one dict of tensors and plain values, which `torch.save` writes and
`torch.load(path, weights_only=True)` reads back; `load_model_file` builds the model from it.
The file's `config` holds, beside the trial's hyperparameters, `architecture`: how the net is
wired (stages, each unit's layer order, where shortcut A's zero channels go), so that it can be
rebuilt without resweep (README, "Model files").

A checkpoint also holds the result reported with it (`with_result`), so that a trial restored from
it reports that epoch again first (`restored_result`): a checkpoint can reach storage while its
result does not reach the driver's database (a driver killed before its writes landed, or after
Tune's experiment state named the checkpoint), and the epoch would be lost. The recorder's writes
are upserts on (trial, epoch, name), so a result reported twice is recorded once.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resweep.config import TrialConfig
from resweep.paper import PREACT_BLOCKS, stage_units
from trainers.models import build_model

CHECKPOINT_FILE = "checkpoint.pt"  # in each of Tune's checkpoint directories: one torch.save'd dict

MODEL_FILE_FORMAT = "resweep-model/1"
ARCHITECTURE = "architecture"  # the key of the model file's config that says how the net is wired


class CheckpointNotFound(FileNotFoundError):
    """The trial's checkpoint is not where the database says (results moved or removed)."""


def read_checkpoint(checkpoint_uri: str) -> dict[str, Any]:
    """The state Tune saved at `checkpoint_uri` (a directory path or a URI such as s3://...)."""
    import pyarrow.fs

    where = checkpoint_uri if "://" in checkpoint_uri else str(Path(checkpoint_uri).expanduser().resolve())
    base, _, _ = where.partition("?")  # an object-store URI may carry options (?region=...)
    target = f"{base.rstrip('/')}/{CHECKPOINT_FILE}"
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(where)
        with filesystem.open_input_stream(f"{path.rstrip('/')}/{CHECKPOINT_FILE}") as stream:
            data = stream.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise CheckpointNotFound(f"{target}: no checkpoint there; the results directory was moved or removed") from None
    except (OSError, ValueError) as exc:  # pyarrow: a missing bucket or key, an unusable URI
        raise CheckpointNotFound(f"{target}: cannot read the checkpoint ({_reason(exc)})") from None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def with_result(checkpoint: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint` with the epoch's reported `result` beside the state (plain values only, so
    that it loads with `weights_only=True`)."""
    return {**checkpoint, "result": _plain_result(result)}


def restored_result(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result reported with the checkpoint a trial restores from, to be reported again before
    the next epoch; None without a checkpoint, or for one saved before results went with them."""
    if not state or not isinstance(state.get("result"), dict):
        return None
    return dict(state["result"])


def build_trained(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    """The network `config` describes with `weights` loaded, in eval mode, on the CPU.

    The class count and input channels come from the weights themselves (the first conv and the
    classifier), so no dataset is read to build it.
    """
    cfg = TrialConfig.from_dict(config)
    model = build_model(
        cfg.model,
        cfg.depth,
        cfg.block,
        cfg.shortcut,
        num_classes=weights["fc.weight"].shape[0],
        in_channels=weights["conv1.weight"].shape[1],
        stride_in=cfg.stride_in,
        zero_init_residual=cfg.zero_init_residual,
    )
    model.load_state_dict(weights)
    return model.eval()


def load_model(checkpoint_uri: str, config: dict[str, Any]) -> nn.Module:
    """The trained network of a trial from its checkpoint and config, in eval mode, on the CPU."""
    return build_trained(config, read_checkpoint(checkpoint_uri)["loop"]["model"])


def model_file(checkpoint_uri: str, config: dict[str, Any], **about: Any) -> dict[str, Any]:
    """One dict holding a trained model: its weights, the trial's config and what the inputs need.

    `input_mean` is the training set's per-pixel mean (1, C, H, W), which the trial subtracted
    from every image (the paper's only preprocessing); it is left out when the dataset is not on
    this machine. `about` adds plain values (trial id, sweep, epoch...).
    """
    state = read_checkpoint(checkpoint_uri)
    config = {k: v for k, v in config.items() if k != ARCHITECTURE}
    cfg = TrialConfig.from_dict(config)
    out: dict[str, Any] = {
        "format": MODEL_FILE_FORMAT,
        "config": _plain({**config, ARCHITECTURE: architecture(cfg)}),
        "state_dict": state["loop"]["model"],
        "epoch": int(state["loop"]["epoch"]),
        "checkpoint_uri": checkpoint_uri,
        **_plain(about),
    }
    mean = input_mean(cfg)
    if mean is not None:
        out["input_mean"] = mean
    return out


def save_model_file(path: str | os.PathLike, checkpoint_uri: str, config: dict[str, Any], **about: Any
                    ) -> dict[str, Any]:
    """Write `model_file(...)` to `path` whole (a temporary file renamed into place); returns what
    it wrote."""
    path = Path(path)
    contents = model_file(checkpoint_uri, config, **about)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(contents, partial)
    os.replace(partial, path)
    return contents


def architecture(cfg: TrialConfig) -> dict[str, Any]:
    """How trainers.models wires the net of `cfg`, in words and numbers a plain PyTorch script can
    follow (README, "Model files"); the state_dict's keys name the same modules."""
    preact = cfg.block in PREACT_BLOCKS
    bottleneck = cfg.block in ("bottleneck", "preact_bottleneck")
    expansion = 4 if bottleneck else 1
    widths = [64, 128, 256, 512] if cfg.model == "imagenet" else [16, 32, 64]
    units = stage_units(cfg.model, cfg.depth, cfg.block)
    if cfg.model == "imagenet":
        stem = ["conv1 (7x7, stride 2, padding 3)", "bn1", "relu", "maxpool (3x3, stride 2, padding 1)"]
    else:
        stem = ["conv1 (3x3, stride 1, padding 1)"] + ([] if preact else ["bn1", "relu"])
    stride_1x1 = cfg.stride_in == "first_1x1"
    if preact and bottleneck:
        order = ["bn1", "relu", f"conv1 (1x1{', stride' if stride_1x1 else ''})", "bn2", "relu",
                 f"conv2 (3x3{'' if stride_1x1 else ', stride'})", "bn3", "relu", "conv3 (1x1, 4x width)", "add"]
    elif preact:
        order = ["bn1", "relu", "conv1 (3x3, stride)", "bn2", "relu", "conv2 (3x3)", "add"]
    elif bottleneck:
        order = [f"conv1 (1x1{', stride' if stride_1x1 else ''})", "bn1", "relu",
                 f"conv2 (3x3{'' if stride_1x1 else ', stride'})", "bn2", "relu", "conv3 (1x1, 4x width)", "bn3",
                 "add", "relu"]
    else:
        order = ["conv1 (3x3, stride)", "bn1", "relu", "conv2 (3x3)", "bn2", "add", "relu"]
    if cfg.shortcut == "none":
        order = [step for step in order if step != "add"]
    shortcuts = {
        "none": "none: a plain net, no addition",
        "A": "A: the identity; where the shape changes, x[:, :, ::stride, ::stride] with zero channels after",
        "B": "B: the identity; where the shape changes, a 1x1 conv (stride) and BN: shortcut.0, shortcut.1",
        "C": "C: a 1x1 conv (stride) and BN on every unit: shortcut.0, shortcut.1",
    }
    projection = "" if not preact else " (pre-activation: a bare 1x1 conv of the unit's bn1-relu output)"
    return {
        "layout": cfg.model,
        "stem": stem,
        "stages": [{"module": f"layer{i + 1}", "units": n, "width": w, "out_channels": w * expansion,
                    "stride": 1 if i == 0 else 2} for i, (n, w) in enumerate(zip(units, widths))],
        "block_order": order,  # one unit, input to output; "stride" sits on the stage's first unit
        "shortcut": shortcuts[cfg.shortcut] + (projection if cfg.shortcut in ("B", "C") else ""),
        # Shortcut A's padding: the input's channels first, then the zeros (F.pad(x, (0, 0, 0, 0, 0, extra))).
        "shortcut_padding": "after",
        "head": (["bn", "relu"] if preact else []) + ["adaptive average pool to 1x1", "flatten", "fc"],
        "convs": "no bias; 3x3 convs padding 1",
        "batch_norm": {"eps": 1e-5, "momentum": 0.1},
        "input": "NCHW float32 images minus input_mean (the training set's per-pixel mean)",
    }


def load_model_file(path: str | os.PathLike) -> nn.Module:
    """The network saved by `python -m orchestrator model`, in eval mode, on the CPU."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FILE_FORMAT:
        raise ValueError(f"{path}: not a resweep model file (expected format {MODEL_FILE_FORMAT})")
    config = {k: v for k, v in saved["config"].items() if k != ARCHITECTURE}
    return build_trained(config, saved["state_dict"])


def input_mean(cfg: TrialConfig) -> torch.Tensor | None:
    """The per-pixel training-set mean the trial subtracted from its inputs; None when its dataset
    is not on this machine (CIFAR is never downloaded for this)."""
    from trainers.data import DatasetUnavailable, load_data

    try:
        data = load_data(cfg.dataset, cfg.data_dir, val_size=cfg.val_size, max_train_samples=cfg.max_train_samples,
                         augment=False, synthetic=cfg.synthetic, download=False)
    except (DatasetUnavailable, FileNotFoundError, RuntimeError):
        return None
    return data.mean


def _plain(value: Any) -> Any:
    """Tuples as lists, so that the file holds only what `weights_only=True` accepts everywhere."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain_result(value: Any) -> Any:
    """A result as dicts, lists and Python scalars (numpy and 0-d tensor numbers as floats/ints)."""
    if isinstance(value, dict):
        return {str(k): _plain_result(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_result(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str):  # exactly that type: numpy's float64 is a float, and not loadable
        if isinstance(value, kind):
            return kind(value)
    if hasattr(value, "item"):  # other numpy scalars, 0-d tensors
        return value.item()
    return str(value)


def _reason(exc: Exception) -> str:
    if getattr(exc, "strerror", None):
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
