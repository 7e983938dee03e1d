"""Helpers shared by the test_cluster_* modules."""

from __future__ import annotations

from pathlib import Path

# One trial of a tiny net on generated data: a whole sweep in seconds on one CPU.
TINY_SWEEP = """\
name: {name}
dataset: synthetic
synthetic: {{num_train: 64, num_test: 32, image_size: 8, channels: 3, num_classes: 4}}
model: cifar
grid:
  depth: [8]
  block: [basic]
  shortcut: [A]
  seed: [0]
train:
  epochs: 2
  batch_size: 32
  lr: 0.05
  augment: false
probes:
  every: 1
resources: {{cpu: 1, gpu: 0}}
fault_tolerance: {{max_failures: 0, checkpoint_every: 1}}
"""


def write_sweep(directory: Path, name: str = "cluster-tiny") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(TINY_SWEEP.format(name=name))
    return path
