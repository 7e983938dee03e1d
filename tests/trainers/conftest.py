"""Trainers tests run single-threaded: their nets are tiny, and on a shared 2-core machine a second
intra-op thread waiting on a busy core makes each step tens of times slower, not faster."""

import torch

torch.set_num_threads(1)
