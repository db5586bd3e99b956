"""The model's operators, recorded on the ``meta`` device: what each kernel computes and moves.

:func:`record_operators` runs one step of a model (inference, or a training step:
forward, cross-entropy, backward, SGD step -- :func:`placement.lab.workloads.make_step`) on
``meta`` tensors under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`: nothing
is allocated or computed, and every ATen operator that reaches the dispatcher becomes one
:class:`Operator` row -- its kind, FLOPs, bytes read and written, shapes, and the phase
(forward, backward, optimizer). Views (``is_view``), allocations and metadata queries move
no data and launch no kernel, so they are left out. On ``meta`` a recurrent layer (LSTM,
GRU) decomposes into its per-time-step matrix products and gate arithmetic, so it gives one
row per kernel per time step, of kind ``recurrent``; ``scaled_dot_product_attention``
decomposes too, and its pieces are of kind ``attention``. Backward operators take the kind
of the forward region that produced them (found through the autograd graph).

FLOPs use the formulas of :class:`torch.utils.flop_counter.FlopCounterMode` (and the
workloads' groups-correct convolution backward), so the operators of a step sum to
:func:`placement.lab.workloads.count_flops` exactly -- the optimizer's element-wise work,
which the counter does not see, is its own ``optimizer`` rows, whose FLOPs are
:data:`placement.lab.workloads.OPTIMIZER_FLOPS_PER_PARAM` per parameter in all.

:class:`OperatorSummary` is the compact form that travels with a :class:`placement.core.job.Job`
(an optional field): per operator kind and size bin (decade of FLOPs, or of bytes for
operators without FLOPs), the count, FLOPs, bytes read and written, and kernel launches.
It is enough for the operator-level model (:mod:`placement.model.opmodel`), which applies a
per-kind, per-size efficiency to each bin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from placement.core.operator_summary import OperatorBin, OperatorSummary, size_bin

_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation"}
_CONV = {"convolution", "convolution_backward", "_convolution", "cudnn_convolution", "conv1d", "conv2d", "conv3d"}
_GATHER = {"embedding", "embedding_dense_backward", "index_select", "index_add", "index_add_", "gather", "scatter",
           "scatter_add", "scatter_add_", "index", "index_put", "index_put_", "_unsafe_index", "take",
           "embedding_bag", "_embedding_bag", "_embedding_bag_backward", "index_select_backward"}
_NORM = {"native_layer_norm", "native_layer_norm_backward", "native_batch_norm", "native_batch_norm_backward",
         "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
         "native_group_norm", "native_group_norm_backward", "cudnn_batch_norm", "cudnn_batch_norm_backward",
         "batch_norm_backward", "_batch_norm_with_update", "_batch_norm_no_update", "_fused_rms_norm",
         "_fused_rms_norm_backward"}
_POOL = {"max_pool2d_with_indices", "max_pool2d_with_indices_backward", "max_pool1d", "max_pool2d",
         "avg_pool2d", "avg_pool2d_backward", "_adaptive_avg_pool2d", "_adaptive_avg_pool2d_backward",
         "adaptive_max_pool2d", "adaptive_max_pool2d_backward", "max_pool3d_with_indices", "avg_pool1d"}
_REDUCTION = {"sum", "mean", "amax", "amin", "max", "min", "_softmax", "_log_softmax", "_softmax_backward_data",
              "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward", "_safe_softmax", "var_mean",
              "std", "var", "norm", "linalg_vector_norm", "logsumexp", "cumsum", "argmax", "argmin", "prod"}
_COPY = {"clone", "_to_copy", "copy_", "cat", "stack", "contiguous", "constant_pad_nd", "_unsafe_view",
         "repeat", "index_copy", "masked_fill", "tril", "triu", "flip", "roll", "select_backward",
         "slice_backward", "new_zeros", "zeros_like", "ones_like", "full_like", "fill_", "zero_", "zeros", "ones",
         "full", "scalar_tensor", "arange", "split_with_sizes_copy", "unsafe_split", "narrow_copy"}
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
              "_record_function_enter_new", "_record_function_exit", "resize_", "set_", "_local_scalar_dense",
              "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "numel",
              "dim", "is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense", "storage_offset",
              "unsafe_split_with_sizes"}

FOREACH_TENSORS_PER_LAUNCH = 48
"""A CUDA multi-tensor ("foreach") kernel updates about this many parameter tensors per launch."""


@dataclass(frozen=True)
class Operator:
    """One kernel-level operator of a step (see module docstring). Bytes are what a kernel
    reads and writes in the roofline sense; ``shapes`` are the tensor arguments' shapes
    then the outputs' (at most 6)."""

    name: str
    kind: str
    phase: str
    flops: float
    bytes_read: float
    bytes_written: float
    shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def bytes_total(self) -> float:
        """Bytes read plus bytes written."""
        return self.bytes_read + self.bytes_written


def _tensors(tree: Any) -> list[torch.Tensor]:
    flat, _ = tree_flatten(tree)
    return [t for t in flat if isinstance(t, torch.Tensor)]


def _nbytes(t: torch.Tensor) -> float:
    return float(t.numel() * t.element_size())


def _kind(base: str, args: Sequence[Any]) -> str:
    name = base.rstrip("_") if base.endswith("_") and base.rstrip("_") not in ("index_add", "index_put") else base
    if base.startswith("_foreach"):
        return "optimizer"
    if name in _MATMUL or base in _MATMUL:
        return "matmul"
    if name in _CONV:
        groups = None
        if name == "convolution" and len(args) > 8:
            groups = args[8]
        elif name == "convolution_backward" and len(args) > 9:
            groups = args[9]
        if isinstance(groups, int) and groups > 1:
            return "dwconv"
        return "conv"
    if name in _GATHER or base in _GATHER:
        return "gather"
    if name in _NORM:
        return "norm"
    if name in _POOL:
        return "pool"
    if name in _REDUCTION:
        return "reduction"
    if name in _COPY or base in _COPY:
        return "copy"
    return "elementwise"


def _flop_registry() -> dict[Any, Callable[..., Any]]:
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    from placement.lab.workloads import _conv_backward_flops

    return {**flop_registry, torch.ops.aten.convolution_backward: shape_wrapper(_conv_backward_flops)}


class _Recorder(TorchDispatchMode):
    """The dispatch mode behind :func:`record_operators`."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Operator] = []
        self.phase = "forward"
        self.region: list[str] = []  # forward regions (recurrent / attention), innermost last
        self.backward_regions: dict[int, str] = {}  # autograd sequence_nr -> region kind
        self.registry = _flop_registry()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func not in self.registry and func is not torch.ops.prim.device.default:
            with self:  # decompose as FlopCounterMode does, so the FLOPs match it
                r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        base = packet.__name__
        if getattr(func, "is_view", False) or base in _NO_KERNEL or func.namespace not in ("aten", "prims"):
            return out
        ins, outs = _tensors((args, kwargs)), _tensors(out)
        if not outs and not base.endswith("_"):
            return out
        flops = float(self.registry[packet](*args, **kwargs, out_val=out)) if packet in self.registry else 0.0
        kind = _kind(base, args)
        phase = self.phase
        node = torch._C._current_autograd_node() if phase != "optimizer" else None
        if node is not None:
            phase = "backward"
            region = self.backward_regions.get(node._sequence_nr())
            if region is not None and kind not in ("optimizer",):
                kind = region
        elif self.region and phase == "forward":
            kind = self.region[-1]
        if phase == "optimizer":
            kind = "optimizer"
        read = sum(_nbytes(t) for t in ins)
        written = sum(_nbytes(t) for t in outs)
        if kind == "gather" or base in ("embedding", "index_select", "gather", "_unsafe_index", "index"):
            # a lookup reads the rows it returns (and the indices), not the whole table
            idx = sum(_nbytes(t) for t in ins if not t.is_floating_point())
            read = min(read, written + idx) if base in ("embedding", "index_select", "gather", "_unsafe_index", "index") else read
        if base.endswith("_") and not outs:
            written = _nbytes(ins[0]) if ins else 0.0
        shapes = tuple(tuple(int(s) for s in t.shape) for t in (ins + outs)[:6])
        self.ops.append(Operator(str(func), kind, phase, flops, read, written, shapes))
        return out


def _autograd_region(outputs: Any, inputs: Any) -> set[int]:
    """Sequence numbers of the autograd nodes between ``inputs`` and ``outputs``."""
    stop: set[Any] = set()
    for t in _tensors(inputs):
        if t.grad_fn is not None:
            stop.add(t.grad_fn)
    seen: set[Any] = set()
    stack = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    nrs: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stop:
            continue
        seen.add(node)
        if type(node).__name__ == "AccumulateGrad":
            continue
        nrs.add(node._sequence_nr())
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return nrs


_RECURRENT_MODULES = (nn.RNNBase, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


class _Attention(torch.overrides.TorchFunctionMode):
    """Marks the operators inside ``scaled_dot_product_attention`` as kind ``attention``."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") != "scaled_dot_product_attention":
            return func(*args, **kwargs)
        self.recorder.region.append("attention")
        try:
            out = func(*args, **kwargs)
        finally:
            self.recorder.region.pop()
        if torch.is_grad_enabled():
            for nr in _autograd_region(out, (args, kwargs)):
                self.recorder.backward_regions[nr] = "attention"
        return out


def _recurrent_hooks(model: nn.Module, rec: _Recorder) -> list[Any]:
    """Hooks on ``model``'s recurrent modules that mark their forward operators (and the
    autograd nodes between their inputs and outputs) as kind ``recurrent``; the handles."""

    def pre(module: nn.Module, inputs: Any) -> None:
        if isinstance(module, _RECURRENT_MODULES):
            rec.region.append("recurrent")

    def post(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(module, _RECURRENT_MODULES):
            rec.region.pop()
            if torch.is_grad_enabled():
                for nr in _autograd_region(output, inputs):
                    rec.backward_regions[nr] = "recurrent"

    handles: list[Any] = []
    for m in model.modules():
        if isinstance(m, _RECURRENT_MODULES):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _optimizer_hooks(optimizer: torch.optim.Optimizer, rec: _Recorder) -> list[Any]:
    """Hooks that put ``rec`` in phase ``optimizer`` for the duration of each optimizer step;
    the handles."""

    def opt_pre(opt: Any, a: Any, k: Any) -> None:
        rec.phase = "optimizer"

    def opt_post(opt: Any, a: Any, k: Any) -> None:
        rec.phase = "forward"

    return [optimizer.register_step_pre_hook(opt_pre), optimizer.register_step_post_hook(opt_post)]


def _spread_optimizer_flops(ops: list[Operator], n_params: int) -> None:
    """Book ``OPTIMIZER_FLOPS_PER_PARAM`` FLOPs per parameter on the optimizer rows of ``ops``
    (in place), in proportion to the bytes each writes (evenly when none writes any)."""
    from placement.lab.workloads import OPTIMIZER_FLOPS_PER_PARAM

    opt_rows = [i for i, o in enumerate(ops) if o.phase == "optimizer"]
    total = float(OPTIMIZER_FLOPS_PER_PARAM * n_params)
    weight = sum(ops[i].bytes_written for i in opt_rows)
    for i in opt_rows:
        o = ops[i]
        share = total * (o.bytes_written / weight) if weight else total / len(opt_rows)
        ops[i] = Operator(o.name, o.kind, o.phase, share, o.bytes_read, o.bytes_written, o.shapes)


def record_operators(build: Callable[[], nn.Module], sample_shape: Sequence[int], dtype: torch.dtype | str,
                     batch_size: int, mode: str) -> list[Operator]:
    """Every kernel-level operator of one step of the model on ``batch_size`` samples (``meta``)."""
    from placement.lab.workloads import _DTYPES, make_step

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be infer or train, got {mode!r}")
    tdtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    with torch.device("meta"):
        model = build()
    x = torch.empty((batch_size, *sample_shape), dtype=tdtype, device="meta")
    y = torch.empty(batch_size, dtype=torch.int64, device="meta")
    rec = _Recorder()
    handles = _recurrent_hooks(model, rec)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if mode == "train":
        from placement.lab.workloads import make_optimizer

        optimizer = make_optimizer(model)
        handles += _optimizer_hooks(optimizer, rec)
    step = make_step(model, mode, optimizer)
    try:
        with _Attention(rec), rec:
            step(x, y)
    finally:
        for h in handles:
            h.remove()
    ops = rec.ops
    if mode == "train":
        # the counter gives the optimizer's element-wise ops no FLOPs; the job's count books
        # OPTIMIZER_FLOPS_PER_PARAM per parameter: spread it over the optimizer rows by size
        _spread_optimizer_flops(ops, sum(p.numel() for p in params))
    return ops


# --------------------------------------------------------------------------- summary


@dataclass
class _Acc:
    count: int = 0
    flops: float = 0.0
    read: float = 0.0
    written: float = 0.0
    launches: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def summarise(ops: Sequence[Operator], param_tensors: int = 0) -> OperatorSummary:
    """Bin operators by kind and size; optimizer updates launch one multi-tensor kernel per
    :data:`FOREACH_TENSORS_PER_LAUNCH` parameter tensors per update op on a GPU."""
    accs: dict[tuple[str, int], _Acc] = {}
    n_opt = sum(1 for o in ops if o.kind == "optimizer")
    per_param = n_opt / param_tensors if param_tensors else 0.0
    for o in ops:
        key = (o.kind, size_bin(o.flops / 1.0, o.bytes_total))
        a = accs.setdefault(key, _Acc())
        a.count += 1
        a.flops += o.flops
        a.read += o.bytes_read
        a.written += o.bytes_written
        a.launches += 1.0
    if n_opt and param_tensors:
        launches = per_param * math.ceil(param_tensors / FOREACH_TENSORS_PER_LAUNCH)
        for (kind, _), a in accs.items():
            if kind == "optimizer":
                a.launches = launches * a.count / n_opt
    bins = tuple(OperatorBin(kind=k, size_bin=s, count=a.count, flops=a.flops, bytes_read=a.read,
                             bytes_written=a.written, launches=a.launches)
                 for (k, s), a in sorted(accs.items()))
    if not bins:
        bins = (OperatorBin(kind="elementwise", size_bin=100, count=1, flops=0.0, bytes_read=0.0, bytes_written=0.0, launches=1.0),)
    return OperatorSummary(bins=bins, param_tensors=param_tensors)


def summary_rows(ops: Sequence[Operator]) -> list[dict[str, Any]]:
    """Operators as plain dicts (for JSON output)."""
    return [{"name": o.name, "kind": o.kind, "phase": o.phase, "flops": o.flops, "bytes_read": o.bytes_read,
             "bytes_written": o.bytes_written, "shapes": [list(s) for s in o.shapes]} for o in ops]


def describe_job_operators(model: str, job: Any, family: str = "", input_shape: str = "",
                           input_dtype: str = "float32") -> tuple[OperatorSummary, list[dict[str, Any]]]:
    """The operators of a job described by ``placement describe``'s arguments: a zoo name, a
    job spec file (JSON/YAML) or ``package.module:attribute`` with its input shape."""
    import json
    from pathlib import Path

    from placement.lab.workloads import ZOO, load_model_factory

    if model in ZOO:
        w = ZOO[model]
        build, shape, dtype = w.build, w.dataset.sample_shape, w.dataset.dtype
    elif Path(model).suffix.lower() in (".json", ".yaml", ".yml"):
        text = Path(model).read_text()
        if Path(model).suffix.lower() == ".json":
            spec = json.loads(text)
        else:
            import yaml

            spec = yaml.safe_load(text)
        if "workload" in spec:
            w = ZOO[str(spec["workload"])]
            build, shape, dtype = w.build, w.dataset.sample_shape, w.dataset.dtype
        else:
            build = load_model_factory(str(spec["model"]))
            shape, dtype = tuple(int(s) for s in spec["input_shape"]), str(spec.get("input_dtype", "float32"))
    else:
        build = load_model_factory(model)
        shape, dtype = tuple(int(s) for s in input_shape.split(",") if s.strip()), input_dtype
    ops = record_operators(build, shape, dtype, int(job.batch_size), str(job.mode))
    with torch.device("meta"):
        tensors = sum(1 for p in build().parameters() if p.requires_grad) if str(job.mode) == "train" else 0
    return summarise(ops, tensors), summary_rows(ops)


_ZOO_OPS: dict[tuple[str, str, int], list[Operator]] = {}
ZOO_RECORD_BATCHES = (2, 3)


def zoo_operators(name: str, mode: str, batch_size: int) -> OperatorSummary:
    """A zoo workload's :class:`OperatorSummary` at any batch size: operators recorded on
    ``meta`` at :data:`ZOO_RECORD_BATCHES` (cached per process) and extended exactly per
    operator (every zoo model's per-operator FLOPs and bytes are affine in the batch size);
    recorded directly where the two recordings differ in structure."""
    from placement.lab.workloads import get_workload

    w = get_workload(name)
    recs = []
    for b in ZOO_RECORD_BATCHES:
        key = (name, mode, b)
        if key not in _ZOO_OPS:
            _ZOO_OPS[key] = record_operators(w.build, w.dataset.sample_shape, w.dataset.dtype, b, mode)
        recs.append(_ZOO_OPS[key])
    with torch.device("meta"):
        tensors = sum(1 for p in w.build().parameters() if p.requires_grad) if mode == "train" else 0
    lo, hi = recs
    b0, b1 = ZOO_RECORD_BATCHES
    if batch_size in ZOO_RECORD_BATCHES:
        return summarise(recs[ZOO_RECORD_BATCHES.index(batch_size)], tensors)
    if len(lo) != len(hi) or any(a.name != b.name for a, b in zip(lo, hi, strict=True)):
        return summarise(record_operators(w.build, w.dataset.sample_shape, w.dataset.dtype, batch_size, mode), tensors)
    t = (batch_size - b0) / (b1 - b0)
    ops = [Operator(a.name, a.kind, a.phase, max(0.0, a.flops + t * (b.flops - a.flops)),
                    max(0.0, a.bytes_read + t * (b.bytes_read - a.bytes_read)),
                    max(0.0, a.bytes_written + t * (b.bytes_written - a.bytes_written)), a.shapes)
           for a, b in zip(lo, hi, strict=True)]
    return summarise(ops, tensors)


def record_step(module: nn.Module, bench: Any, mode: str) -> list[Operator]:
    """The operators of a reference micro-benchmark's step (:mod:`placement.lab.microbench`) on
    ``meta``: forward (``infer``) or forward + ``sum().backward()`` (``train``; + the optimizer's
    step for a bench that runs one), recorded as a job's are (same kinds, regions and FLOP formulas)."""
    rec = _Recorder()
    handles: list[Any] = []
    optimizer = None
    if mode == "train" and getattr(bench, "optimizer", False):
        from placement.lab.workloads import make_optimizer

        optimizer = make_optimizer(module)
        handles += _optimizer_hooks(optimizer, rec)

    def pre(m: nn.Module, inputs: Any) -> None:
        rec.region.append("recurrent")

    def post(m: nn.Module, inputs: Any, output: Any) -> None:
        rec.region.pop()
        if torch.is_grad_enabled():
            for nr in _autograd_region(output, inputs):
                rec.backward_regions[nr] = "recurrent"

    for m in module.modules():
        if isinstance(m, _RECURRENT_MODULES):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    if bench.vocab:
        x = torch.empty(bench.input_shape, dtype=torch.int64, device="meta")
    else:
        x = torch.empty(bench.input_shape, dtype=torch.float32, device="meta", requires_grad=(mode == "train"))
    try:
        with _Attention(rec), rec:
            if mode == "infer":
                module.eval()
                with torch.inference_mode():
                    module(x)
            else:
                module.train()
                module(x).float().sum().backward()
                if optimizer is not None:
                    optimizer.step()
    finally:
        for h in handles:
            h.remove()
    ops = rec.ops
    if optimizer is not None:
        _spread_optimizer_flops(ops, sum(p.numel() for p in module.parameters() if p.requires_grad))
    return ops
