"""Datasets as in-memory tensors, and the mini-batches made from them where they live.

Every dataset is loaded whole into one float tensor per split, the training set's per-pixel mean is
subtracted from every split (the paper's only preprocessing), and the tensors are moved to the
training device. Batches are then cut, shuffled and augmented by tensor ops on that device: on a
GPU nothing crosses the bus during an epoch and no DataLoader worker sits in the hot path; on a CPU
the same code runs on CPU tensors.

Datasets:
- ``cifar10`` / ``cifar100``: torchvision's dataset classes reading ``data_dir`` (downloaded there when
  the network allows).
- ``digits``: scikit-learn's bundled 8x8 grayscale digits (1,797 images), a fixed stratified split,
  made once with scikit-learn and kept in ``data_dir`` (``_load_digits``).
- ``synthetic``: deterministic random images whose label is learnable, any shape.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from resweep.config import IMAGE_SIZE, Dataset, Synthetic
from resweep.errors import UserError

DATASETS = get_args(Dataset)
DEFAULT_DATA_DIR = "~/.cache/resweep"
DIGITS_TEST_SIZE = 360  # of 1,797 images; stratified, random_state 0: the same split for every trial
SPLIT_SEED = 0  # the validation hold-out and synthetic data do not vary with the trial's seed


class DatasetUnavailable(UserError):
    """The dataset's files are missing (or corrupted) and could not be downloaded."""


@dataclass(frozen=True)
class Split:
    """One split of a dataset, whole, on one device."""

    x: Tensor  # (N, C, H, W) float32, training-set per-pixel mean subtracted
    y: Tensor  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Augment:
    """Pad-and-random-crop (`pad` pixels of zeros each side) and, if `flip`, random horizontal flips."""

    pad: int
    flip: bool


@dataclass(frozen=True)
class Data:
    """A dataset ready to train on: splits on the device and what the model needs to know of them."""

    name: str
    train: Split
    test: Split
    val: Split | None
    num_classes: int
    augment: Augment | None  # applied to training batches only
    mean: Tensor  # (1, C, H, W) the training set's per-pixel mean, subtracted from every split

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]


def load_data(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int = 0,
    max_train_samples: int | None = None,
    augment: bool = True,
    synthetic: dict | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> Data:
    """Load `dataset` whole onto `device`: split, capped, mean-subtracted, with its augmentation."""
    if dataset in ("cifar10", "cifar100"):
        train_x, train_y, test_x, test_y, num_classes = _load_cifar(dataset, _data_dir(data_dir), download)
    elif dataset == "digits":
        train_x, train_y, test_x, test_y, num_classes = _load_digits(_data_dir(data_dir))
    elif dataset == "synthetic":
        spec = Synthetic.model_validate(synthetic or {}).model_dump()  # its defaults filled in
        train_x, train_y, test_x, test_y, num_classes = make_synthetic(**spec)
    else:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    side = IMAGE_SIZE.get(dataset) or spec["image_size"]
    # The driver validates sweeps against IMAGE_SIZE without loading anything: it must be true.
    assert train_x.shape[-2:] == (side, side), (dataset, tuple(train_x.shape), side)
    # Shift by up to an eighth of the side: CIFAR's 4 pixels (the paper), 1 on digits' 8x8. A
    # mirrored digit is another glyph, so digits are not flipped.
    aug = Augment(pad=max(1, side // 8), flip=dataset != "digits")

    val = None
    if val_size:
        if not 0 < val_size < len(train_y):
            raise ValueError(f"val_size must be between 1 and {len(train_y) - 1}, not {val_size}")
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(SPLIT_SEED))
        val_idx, train_idx = order[:val_size].sort().values, order[val_size:].sort().values
        val = (train_x[val_idx], train_y[val_idx])
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    if max_train_samples is not None:
        train_x, train_y = train_x[:max_train_samples], train_y[:max_train_samples]

    mean = train_x.mean(dim=0, keepdim=True)  # (1, C, H, W): the per-pixel mean of the training set

    def split(x: Tensor, y: Tensor) -> Split:
        return Split((x - mean).to(device), y.to(device))

    return Data(
        name=dataset,
        train=split(train_x, train_y),
        test=split(test_x, test_y),
        val=split(*val) if val is not None else None,
        num_classes=num_classes,
        augment=aug if augment else None,
        mean=mean.to(device),
    )


_cache: dict[str, Data] = {}  # one dataset per process: a reused Ray worker keeps it for its next trial


def cached_data(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int = 0,
    max_train_samples: int | None = None,
    augment: bool = True,
    synthetic: dict | None = None,
    device: str | torch.device = "cpu",
) -> Data:
    """`load_data`, loaded once per process for the same arguments (the trainable's entry point).

    A Ray worker that Tune reuses for the next trial finds the dataset already in memory (and on
    the GPU) instead of reading, splitting and moving it again. One entry only, dropped before a
    different dataset is loaded, so a worker never holds two. The splits are shared between the
    trials of the process: nothing in the trainers writes into them (batches are gathered copies).
    """
    key = json.dumps(
        [dataset, str(_data_dir(data_dir)), val_size, max_train_samples, augment, synthetic, str(torch.device(device))],
        sort_keys=True,
        default=str,
    )
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_data(
            dataset, data_dir, val_size=val_size, max_train_samples=max_train_samples, augment=augment,
            synthetic=synthetic, device=device,
        )  # fmt: skip
    return _cache[key]


class Batches:
    """Mini-batches of a split, delivered on `device` (where the split lives, unless told otherwise).

    Shuffling and augmentation draw from `generator`, which must live where the split does; its state
    is the only randomness, so saving it makes an epoch reproducible.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: Augment | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if (shuffle or augment) and generator is None:
            raise ValueError("shuffled or augmented batches need a generator")
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.augment, self.generator = shuffle, augment, generator
        self.device = torch.device(device) if device is not None else split.x.device

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.split.x, self.split.y
        n = len(y)
        order = torch.randperm(n, generator=self.generator, device=x.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = x[idx], y[idx]
            if self.augment is not None:
                xb = augment_batch(xb, self.augment, self.generator)
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)


def augment_batch(x: Tensor, augment: Augment, generator: torch.Generator) -> Tensor:
    """Random crops of the zero-padded batch, each mirrored with probability 1/2 if `augment.flip`."""
    b, c, h, w = x.shape
    p = augment.pad
    padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p); zero is the mean after mean subtraction
    dev = x.device
    top = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=dev)
    left = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=dev)
    rows = top + torch.arange(h, device=dev)  # (B, H)
    cols = left + torch.arange(w, device=dev)  # (B, W)
    if augment.flip:
        flip = torch.rand(b, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)  # the crop read right to left is its mirror image
    return padded[
        torch.arange(b, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def make_synthetic(
    num_train: int, num_test: int, image_size: int, channels: int, num_classes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Noisy images of per-class smooth templates: deterministic, and learnable by a small convnet."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    coarse = max(1, image_size // 8)
    templates = F.interpolate(
        torch.randn(num_classes, channels, coarse, coarse, generator=g),
        size=(image_size, image_size),
        mode="bilinear",
        align_corners=False,
    )  # (K, C, S, S), low-frequency so that small shifts keep the class recognisable
    n = num_train + num_test
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = templates[y] + torch.randn(n, channels, image_size, image_size, generator=g)
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:], num_classes


_DIGITS_TRAIN = 1797 - DIGITS_TEST_SIZE
DIGITS_SHAPES = {  # the kept split's arrays, in the order _load_digits returns them
    "train_x": ((_DIGITS_TRAIN, 1, 8, 8), np.float32), "train_y": ((_DIGITS_TRAIN,), np.int64),
    "test_x": ((DIGITS_TEST_SIZE, 1, 8, 8), np.float32), "test_y": ((DIGITS_TEST_SIZE,), np.int64),
}  # fmt: skip
DIGITS_SPLIT = tuple(DIGITS_SHAPES)


def _load_digits(root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """The digits split (train_x, train_y, test_x, test_y, classes).

    scikit-learn makes it (`_split_digits`), once: the arrays are kept in `root`, in a file named
    by scikit-learn's version and the split's size and seed (`digits_cache`), and later loads read
    them with numpy alone. Importing scikit-learn's datasets costs a worker's first trial about a
    second (docs/performance.md); the file is 0.5 MB. A file that is missing, unreadable or not
    the split's shapes is made again; a `root` that cannot be written only means no file.
    """
    path = digits_cache(root)
    arrays = _read_digits(path) if path is not None else None
    if arrays is None:
        arrays = _split_digits()
        if path is not None:
            _write_digits(path, arrays)
    train_x, train_y, test_x, test_y = (torch.from_numpy(arrays[k]) for k in DIGITS_SPLIT)
    return train_x, train_y, test_x, test_y, 10


def _split_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def digits_cache(root: Path) -> Path | None:
    """Where the digits split made by this scikit-learn is kept (None without scikit-learn)."""
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return None
    return root / f"digits-split-sklearn{version}-test{DIGITS_TEST_SIZE}-seed{SPLIT_SEED}.npz"


def _read_digits(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in DIGITS_SPLIT}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, cut short, not an .npz
        return None
    if any((a.shape, a.dtype) != DIGITS_SHAPES[k] for k, a in arrays.items()):
        return None
    return arrays


def _write_digits(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the file whole or not at all (a temp file renamed over it): workers that load digits
    at once each write the same bytes, and a reader never sees half of them."""
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
            temp = Path(f.name)
            np.savez(f, **arrays)
        temp.chmod(0o644)  # as any cache file: a data_dir shared by several users serves them all
        os.replace(temp, path)
    except OSError:  # a read-only or full data_dir: the split is made again next time
        if temp is not None:
            temp.unlink(missing_ok=True)


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser()


def _cifar_class(dataset: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if dataset == "cifar10" else CIFAR100


def cifar_files(dataset: str) -> list[str]:
    """The files torchvision's class reads, relative to `data_dir`."""
    cls = _cifar_class(dataset)
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [f"{cls.base_folder}/{name}" for name in names]


def ensure_dataset(
    dataset: str, data_dir: str | os.PathLike | None = None, *, download: bool = True, verify: bool = False
) -> None:
    """Make sure `dataset` can be loaded, downloading it if allowed; DatasetUnavailable if not.

    Meant for the driver, once, before trials start (so that trials never race to download).
    With `verify`, files that are all there are also loaded once (checksums, unpickling), so
    corrupt files are told before Ray starts rather than by every trial.
    """
    if dataset not in ("cifar10", "cifar100"):
        return  # digits ships with scikit-learn; synthetic is made on the spot
    root = _data_dir(data_dir)
    missing = [f for f in cifar_files(dataset) if not (root / f).is_file()]
    if not missing:
        if verify:
            _check_loads(dataset, root)
        return
    cls = _cifar_class(dataset)
    why = "downloading is off" if not download else ""
    if download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            cls(root=str(root), train=True, download=True)
            return
        except Exception as e:  # no network, a proxy, a full disk: all end in the same advice
            why = f"the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    raise DatasetUnavailable(
        f"data_dir {root}: {dataset} is missing ({missing[0]} and {len(missing) - 1} more) and {why}; "
        f"put the extracted {cls.filename} there (a folder {cls.base_folder}/ with "
        f"{', '.join(f.split('/')[1] for f in cifar_files(dataset))}), from {cls.url}"
    )


def _check_loads(dataset: str, root: Path) -> None:
    cls = _cifar_class(dataset)
    try:
        cls(root=str(root), train=True), cls(root=str(root), train=False)
    except Exception as e:  # torchvision's checksum test, or a file that does not unpickle
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DatasetUnavailable(
            f"data_dir {root}: {dataset} files under {cls.base_folder}/ are corrupted ({first}); "
            f"delete that folder so they are downloaded again, or put intact files from {cls.url} there"
        ) from None


def _load_cifar(dataset: str, root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    ensure_dataset(dataset, root, download=download)
    cls = _cifar_class(dataset)
    try:
        train, test = cls(root=str(root), train=True), cls(root=str(root), train=False)
    except RuntimeError as e:  # torchvision's checksum test failed
        raise DatasetUnavailable(
            f"data_dir {root}: {dataset} files under {cls.base_folder}/ are corrupted ({e}); "
            f"delete that folder so they are downloaded again, or put intact files from {cls.url} there"
        ) from None

    def tensors(ds) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0  # (N, 32, 32, 3) uint8 -> (N, 3, 32, 32)
        return x.contiguous(), torch.tensor(ds.targets, dtype=torch.int64)

    return *tensors(train), *tensors(test), len(train.classes)
