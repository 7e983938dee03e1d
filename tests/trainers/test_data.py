"""Datasets: the CIFAR on-disk format, digits, synthetic, mean subtraction, splits, batches, augmentation."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

import trainers.data as data_module

from trainers.data import (
    Data,
    DIGITS_TEST_SIZE,
    Augment,
    Batches,
    DatasetUnavailable,
    Split,
    augment_batch,
    cifar_files,
    ensure_dataset,
    load_data,
)
from resweep.errors import UserError


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    """n images as CIFAR stores them: uint8 rows of 3072 = R plane, G plane, B plane, each 32x32."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> tuple[np.ndarray, list, np.ndarray, list]:
    """Tiny CIFAR-10 in the real layout: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _cifar_rows(per_batch, seed=i), [(i + j) % 10 for j in range(per_batch)]
        _write(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels, "data": rows})
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = _cifar_rows(test, seed=99), [j % 10 for j in range(test)]
    _write(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test_rows})
    _write(folder / "batches.meta", {"label_names": [f"class{k}" for k in range(10)], "num_vis": 3072})
    return np.concatenate(train_rows), train_labels, test_rows, test_labels


def write_cifar100(root: Path) -> tuple[np.ndarray, list]:
    folder = root / "cifar-100-python"
    rows, labels = _cifar_rows(5, seed=7), [3, 99, 0, 42, 7]
    _write(folder / "train", {"fine_labels": labels, "coarse_labels": [0] * 5, "data": rows})
    _write(folder / "test", {"fine_labels": [1, 2], "coarse_labels": [0, 0], "data": _cifar_rows(2, seed=8)})
    _write(folder / "meta", {"fine_label_names": [f"c{k}" for k in range(100)], "coarse_label_names": ["x"] * 20})
    return rows, labels


@pytest.fixture
def no_checksums(monkeypatch):
    """Accept our tiny files: torchvision's md5 test is the one step the real files alone can pass."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_cifar10_files_load_pixel_for_pixel_in_channel_first_order(tmp_path, no_checksums):
    train_rows, train_labels, test_rows, test_labels = write_cifar10(tmp_path)
    data = load_data("cifar10", tmp_path, augment=False, download=False)
    assert data.num_classes == 10 and data.in_channels == 3
    assert data.train.x.shape == (20, 3, 32, 32) and data.test.x.shape == (6, 3, 32, 32)
    assert data.train.y.tolist() == train_labels and data.test.y.tolist() == test_labels

    expected_train = torch.from_numpy(train_rows.reshape(-1, 3, 32, 32)).float() / 255
    expected_test = torch.from_numpy(test_rows.reshape(-1, 3, 32, 32)).float() / 255
    mean = expected_train.mean(0)
    torch.testing.assert_close(data.train.x, expected_train - mean)
    torch.testing.assert_close(data.test.x, expected_test - mean)  # the training set's mean, not the test set's
    # Row layout: image 0's green channel starts at byte 1024, pixel (0, 0).
    assert data.train.x[0, 1, 0, 0] + mean[1, 0, 0] == pytest.approx(train_rows[0, 1024] / 255)


def test_cifar100_reads_fine_labels(tmp_path, no_checksums):
    rows, labels = write_cifar100(tmp_path)
    data = load_data("cifar100", tmp_path, augment=False, download=False)
    assert data.num_classes == 100
    assert data.train.y.tolist() == labels
    assert data.train.x.shape == (5, 3, 32, 32) and len(data.test) == 2


def test_cifar_loads_through_torchvisions_checksums(tmp_path):
    write_cifar10(tmp_path)  # right layout, wrong bytes: the real md5 test must reject it
    with pytest.raises(DatasetUnavailable, match="corrupted"):
        load_data("cifar10", tmp_path, download=False)


def test_missing_cifar_without_download_names_the_directory_and_the_files(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_data("cifar10", tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "test_batch" in message
    assert "\n" not in message
    assert isinstance(info.value, UserError)  # the CLI turns it into one line and exit status 2


def test_missing_cifar_with_no_network_says_the_download_failed(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailable, match="download failed.*no route to host.*cifar-100-python"):
        ensure_dataset("cifar100", tmp_path, download=True)


def test_present_cifar_needs_no_download(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", pytest.fail)
    ensure_dataset("cifar10", tmp_path, download=True)
    assert len(cifar_files("cifar10")) == 7


def test_digits_is_a_fixed_stratified_split():
    a = load_data("digits", augment=False)
    b = load_data("digits", augment=False)
    assert len(a.train) == 1797 - DIGITS_TEST_SIZE and len(a.test) == DIGITS_TEST_SIZE
    assert a.in_channels == 1 and a.train.x.shape[2:] == (8, 8) and a.num_classes == 10
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    per_class = torch.bincount(a.test.y, minlength=10)
    assert per_class.min() >= 35 and per_class.max() <= 37  # ~36 of each digit: stratified


def _split_of(data: Data) -> dict[str, np.ndarray]:
    """The split as stored, from a Data (load_data subtracts the training mean: added back)."""
    return {"train_x": (data.train.x + data.mean).numpy(), "train_y": data.train.y.numpy(),
            "test_x": (data.test.x + data.mean).numpy(), "test_y": data.test.y.numpy()}  # fmt: skip


def test_the_digits_split_is_kept_in_data_dir_and_read_back_bit_for_bit(tmp_path):
    made = data_module._split_digits()  # scikit-learn's own split
    first = load_data("digits", tmp_path, augment=False)
    [kept] = tmp_path.iterdir()
    assert kept == data_module.digits_cache(tmp_path) and kept.name.startswith("digits-split-sklearn")
    assert oct(kept.stat().st_mode & 0o777) == "0o644"
    stored = np.load(kept)
    for key in data_module.DIGITS_SPLIT:
        assert np.array_equal(stored[key], made[key]) and stored[key].dtype == made[key].dtype, key
    second = load_data("digits", tmp_path, augment=False)  # read from the file
    for key, array in _split_of(second).items():
        assert np.array_equal(array, _split_of(first)[key]), key
    assert torch.equal(second.mean, first.mean) and torch.equal(second.train.x, first.train.x)


def test_with_the_digits_file_kept_a_worker_never_imports_scikit_learn(tmp_path):
    load_data("digits", tmp_path, augment=False)
    script = ("import sys, torch; from trainers.data import load_data; "
              f"d = load_data('digits', {str(tmp_path)!r}, augment=False); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')), float(d.test.x.sum()))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    imported, total = out.stdout.split("] ")
    assert imported == "[" and float(total) == float(load_data("digits", tmp_path, augment=False).test.x.sum())


@pytest.mark.parametrize("damage", ["truncated", "not an npz", "wrong shape"])
def test_a_damaged_digits_file_is_made_again(tmp_path, damage):
    good = _split_of(load_data("digits", tmp_path, augment=False))
    kept = data_module.digits_cache(tmp_path)
    if damage == "truncated":
        kept.write_bytes(kept.read_bytes()[:1000])
    elif damage == "not an npz":
        kept.write_text("hello")
    else:
        np.savez(kept, **{**good, "test_y": good["test_y"][:10]})
    again = _split_of(load_data("digits", tmp_path, augment=False))
    assert all(np.array_equal(again[k], good[k]) for k in good)
    with np.load(kept) as stored:  # and the file is whole again
        assert all(np.array_equal(stored[k], good[k]) for k in good)


def test_a_data_dir_that_cannot_be_written_still_loads_digits(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")  # mkdir under it fails, even for root
    data = load_data("digits", blocked / "data", augment=False)
    assert len(data.test) == DIGITS_TEST_SIZE and list(tmp_path.iterdir()) == [blocked]


def test_synthetic_is_deterministic_shaped_as_asked_and_learnable():
    spec = {"num_train": 300, "num_test": 100, "image_size": 12, "channels": 2, "num_classes": 4}
    a, b = (load_data("synthetic", synthetic=spec, augment=False) for _ in range(2))
    assert a.train.x.shape == (300, 2, 12, 12) and a.test.x.shape == (100, 2, 12, 12) and a.num_classes == 4
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    # A nearest-class-mean classifier fitted on the training set labels most test images right.
    means = torch.stack([a.train.x[a.train.y == k].mean(0) for k in range(4)])
    nearest = torch.cdist(a.test.x.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == a.test.y).float().mean() > 0.9


def test_per_pixel_mean_is_computed_on_the_training_split_only():
    raw = load_data("digits", augment=False)
    held = load_data("digits", augment=False, val_size=200)
    torch.testing.assert_close(held.train.x.mean(0), torch.zeros(1, 8, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(held.test.x + held.mean, raw.test.x + raw.mean)  # the same images underneath
    assert held.val.x.mean(0).abs().max() > 1e-3  # the hold-out's own mean was not subtracted
    assert raw.train.x.mean(0).abs().max() < 1e-5
    # Per pixel, not per channel: pixels of one image are shifted by different amounts.
    shift = (raw.test.x - held.test.x)[0, 0]
    assert shift.max() - shift.min() > 1e-3


def _positions_in(split: Split, mean: torch.Tensor, full: Data) -> list[int]:
    """Where each of the split's images (before mean subtraction) sits in `full`'s training set."""
    distance = torch.cdist(
        (split.x + mean).flatten(1), (full.train.x + full.mean).flatten(1), compute_mode="donot_use_mm_for_euclid_dist"
    )
    nearest = distance.min(1)
    assert nearest.values.max() < 1e-4  # every image is one of the originals
    return nearest.indices.tolist()


def test_validation_split_is_held_out_of_training_and_fixed():
    spec = {"num_train": 200, "num_test": 50, "image_size": 4, "channels": 1, "num_classes": 3}
    full = load_data("synthetic", synthetic=spec, augment=False)
    a = load_data("synthetic", synthetic=spec, augment=False, val_size=60)
    b = load_data("synthetic", synthetic=spec, augment=False, val_size=60)
    assert len(a.val) == 60 and len(a.train) == 140 and len(a.test) == 50
    assert torch.equal(a.val.x, b.val.x)
    val, train = _positions_in(a.val, a.mean, full), _positions_in(a.train, a.mean, full)
    assert sorted(val + train) == list(range(200))  # disjoint, and together the whole training set
    assert torch.equal(a.val.y, full.train.y[val])


def test_max_train_samples_caps_the_training_set():
    data = load_data("digits", augment=False, max_train_samples=50, val_size=10)
    assert len(data.train) == 50 and len(data.val) == 10 and len(data.test) == DIGITS_TEST_SIZE


def test_shuffled_batches_cover_every_image_once_per_epoch():
    split = Split(torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10))
    batches = Batches(split, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 3
    epoch1 = [y for _, ys in batches for y in ys.tolist()]
    epoch2 = [y for _, ys in batches for y in ys.tolist()]
    assert sorted(epoch1) == list(range(10)) and sorted(epoch2) == list(range(10))
    assert epoch1 != epoch2  # a new order each epoch
    assert all(x.flatten().tolist() == y.tolist() for x, y in batches)  # images stay with their labels


def test_unshuffled_batches_keep_order_and_shapes():
    split = Split(torch.randn(7, 3, 4, 4), torch.arange(7))
    xs, ys = zip(*Batches(split, 3))
    assert [len(y) for y in ys] == [3, 3, 1]
    assert torch.equal(torch.cat(xs), split.x)


def _crops_of(image: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every crop the augmentation may produce from `image`: (2 pad + 1)^2 offsets, mirrored or not."""
    c, h, w = image.shape
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    crops = [padded[:, i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [c.flip(2) for c in crops] if flip else crops


def test_augmentation_makes_padded_random_crops_and_mirrors():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 10, 10)
    out = augment_batch(x, Augment(pad=4, flip=True), torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    for i in range(8):
        assert any(torch.equal(out[i], crop) for crop in _crops_of(x[i], 4, True)), i
    unchanged = sum(torch.equal(out[i], x[i]) for i in range(64))
    mirrored_in_place = sum(torch.equal(out[i], x[i].flip(2)) for i in range(64))
    assert unchanged < 16 and mirrored_in_place < 16  # most images are moved
    # Without flips, no crop is a mirror image of a shifted one: every output is an unflipped crop.
    plain = augment_batch(x[:8], Augment(pad=1, flip=False), torch.Generator().manual_seed(2))
    for i in range(8):
        assert any(torch.equal(plain[i], crop) for crop in _crops_of(x[i], 1, False)), i


def test_augmentation_flips_about_half_and_is_reproducible():
    x = torch.arange(16.0).reshape(1, 1, 1, 16).repeat(1000, 1, 1, 1)
    out = augment_batch(x, Augment(pad=0, flip=True), torch.Generator().manual_seed(3))
    flipped = (out[:, 0, 0, 0] == 15).float().mean().item()
    assert 0.4 < flipped < 0.6
    again = augment_batch(x, Augment(pad=0, flip=True), torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_augment_off_leaves_training_batches_alone():
    data = load_data("digits", augment=False)
    assert data.augment is None
    assert load_data("digits").augment == Augment(pad=1, flip=False)
    assert load_data("synthetic", synthetic={"image_size": 32}).augment == Augment(pad=4, flip=True)


def test_unknown_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="cifar10, cifar100, digits, synthetic"):
        load_data("mnist")
