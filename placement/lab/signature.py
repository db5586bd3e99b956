"""Job signatures: a stable structural hash of a model, the key of per-architecture evidence.

A signature names *what runs*, not how much of it: the model's leaf layers in order (their
class and every parameter's and buffer's name, shape and dtype), the per-sample input shape
and dtype. Batch size and mode are left out, so the outcomes measured at one batch size
correct the estimates of the same network at every other batch size and in both modes
(the evidence store keeps mode per outcome).

The hash is computed on the ``meta`` device (nothing is allocated) and does not depend on
parameter *values*, the Python object's address, the process or the torch version's
module repr: only on layer types and tensor shapes. ``placement describe`` and
:func:`placement.serve.client.job_signature` print and send it; the service accepts any 16..64 lower
hex digits (:data:`SIGNATURE_PATTERN`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

SIGNATURE_PATTERN = r"^[0-9a-f]{16,64}$"
SIGNATURE_HEX_DIGITS = 32
SIGNATURE_SCHEMA = "placement.signature/1"


def structure(module: Any) -> list[list[Any]]:
    """The leaf layers of ``module`` (an ``nn.Module``) in registration order:
    ``[class name, [[tensor name, shape, dtype], ...]]`` per leaf (parameters then buffers)."""
    out: list[list[Any]] = []
    for _, sub in module.named_modules():
        if any(True for _ in sub.children()):
            continue
        tensors = [[name, list(t.shape), str(t.dtype).removeprefix("torch.")]
                   for name, t in list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False))
                   if t is not None]
        out.append([f"{type(sub).__module__.split('.')[0]}.{type(sub).__name__}", tensors])
    return out


def signature_of(module: Any, sample_shape: Sequence[int], input_dtype: str) -> str:
    """The signature of a built module for per-sample inputs of ``sample_shape`` and ``input_dtype``."""
    doc = {"schema": SIGNATURE_SCHEMA, "layers": structure(module), "input_shape": [int(s) for s in sample_shape],
           "input_dtype": str(input_dtype).removeprefix("torch.")}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:SIGNATURE_HEX_DIGITS]


def signature_of_factory(build: Callable[[], Any], sample_shape: Sequence[int], input_dtype: str) -> str:
    """:func:`signature_of` a model built by ``build()`` on the ``meta`` device (nothing allocated)."""
    import torch

    with torch.device("meta"):
        module = build()
    return signature_of(module, sample_shape, input_dtype)


def workload_signature(name: str) -> str:
    """The signature of a zoo workload (:data:`placement.lab.workloads.ZOO`)."""
    from placement.lab.workloads import get_workload

    w = get_workload(name)
    return signature_of_factory(w.build, w.dataset.sample_shape, str(w.dataset.dtype))
