"""``fmmforge.nn``: linear layers whose products go through ``fmmforge.matmul``.

:class:`FastLinear` is an ``nn.Linear`` (same parameters, same ``state_dict``) whose forward is
``fmmforge.matmul(x, weight.T) + bias`` where a tuned kernel applies and exactly
``nn.functional.linear`` everywhere else. :func:`accelerate` turns a model's ``nn.Linear`` layers
into FastLinear in place.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from fmmforge.core.app.matmul import matmul

M = TypeVar("M", bound=nn.Module)


class FastLinear(nn.Linear):
    """``nn.Linear`` with its product dispatched by ``fmmforge.matmul`` (it adds no state)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return matmul.linear(input, self.weight, self.bias)


def accelerate(model: M) -> M:
    """Make every plain ``nn.Linear`` of ``model`` (the model itself included) a :class:`FastLinear`,
    in place: the same module objects, parameters, hooks and state_dict; returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FastLinear
    return model
