"""What a run's config stands for: its data and its network, built the same way in every process.

Datasets are loaded once per process (many runs share one), and networks are built from the
config's model and data; a seed gives the same initial weights everywhere.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
from torch import nn

from ..config import DataConfig, ModelConfig


@lru_cache(maxsize=8)
def load_data(cfg: DataConfig):
    """Datasets are small and shared by many runs: load each once per process."""
    from ..data import downloads_allowed, load_dataset
    return load_dataset(cfg.name, train_size=cfg.train_size, test_size=cfg.test_size, seed=cfg.subset_seed,
                        download=downloads_allowed(),
                        noise=cfg.noise, noise_seed=cfg.noise_seed, validation=cfg.validation)


def build_model_for(model_cfg: ModelConfig, data_cfg: DataConfig, seed: int | None = None) -> nn.Module:
    from ..models import build_model
    data = load_data(data_cfg)
    return build_model(model_cfg.name, num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                       width=model_cfg.width, hidden=model_cfg.hidden, seed=seed, init=model_cfg.init)


@contextlib.contextmanager
def own_random_state():
    """Training seeds the global random generators (torch, numpy, random), and building a model without a seed
    draws from them; the caller's are restored after it, so that what a notebook draws after run_all does not
    depend on whether its runs were trained in its process or by another one and loaded."""
    import random

    import numpy as np
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
