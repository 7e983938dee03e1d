"""resweep's trainers: the ResNet family, datasets, the training loop, probes and the Tune trainable."""
