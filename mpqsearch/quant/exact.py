"""Evaluation that computes what ONNX Runtime computes: every op that its CPU provider runs as a
fused integer kernel (``QLinearConv``, ``QGemm``, ``QLinearAdd``, ``QLinearMul``,
``QLinearGlobalAveragePool``, ``QLinearSigmoid``) is computed in the fake-quant model as that kernel
does (:mod:`.integer`), so that the exported file and the fake-quant model give the same numbers.

:func:`install` rewrites a quantized model's torch.fx graph: each such op (an op between quantizers
of 8 bits or fewer, as the export's QDQ pairs make ONNX Runtime fuse it) becomes a call of a
dispatcher here, which computes the kernel when no gradient is recorded (evaluation) and the op
itself otherwise (calibration, QAT's straight-through estimator, ONNX tracing, or inside
``exact_kernels(False)``). ``QLinearConcat`` and ``QLinearLeakyRelu`` need nothing: their lookup
tables compute what the fake-quant ops compute. docs/numerics.md ("Exact evaluation") has the rules
and the measurements.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from .functional import quant_range
from .integer import (
    Grid,
    accumulate,
    logistic,
    output_multiplier,
    qlinear_add,
    qlinear_global_average_pool,
    qlinear_mul,
    requantize,
)
from .modules import ActFakeQuant, BiasFakeQuant, SameGridQuant, WeightFakeQuant
from .ops import chain_step, step_kind
from .qdq import DequantizedWeight, QuantizedActivation, broadcast, container

_ENABLED: ContextVar[bool] = ContextVar("mpqsearch_exact_kernels", default=True)


@contextmanager
def exact_kernels(enabled: bool = True) -> Iterator[None]:
    """Within this block, quantized models evaluate with ONNX Runtime's integer kernels (the default)
    or, with ``enabled=False``, in float32 as fake quantization alone does (the path before
    :func:`install`, kept for comparisons)."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _active(*tensors: object) -> bool:
    return (_ENABLED.get() and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in tensors))


def grid_of(module: nn.Module) -> Grid | None:
    """The 8-bit grid of a quantizer (fake-quant or export module), ``None`` when it is not one."""
    if isinstance(module, SameGridQuant):
        module = module.quantizer
    if isinstance(module, ActFakeQuant) and module.observing:
        return None
    if not isinstance(module, (ActFakeQuant, QuantizedActivation)) or module.bits > 8:
        return None
    qmin, qmax = quant_range(module.bits, module.signed, narrow=False)
    zero = module.zero_point
    scale = module.scale.detach().to(torch.float32).reshape(())
    return Grid(scale, container(module.bits, module.signed, zero)[1], qmin - zero, qmax - zero)


def _only(layer: nn.Module, name: str) -> nn.Module | None:
    if not parametrize.is_parametrized(layer, name):
        return None
    chain = layer.parametrizations[name]
    return chain[0] if len(chain) == 1 else None


def _weight(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The weight's levels and scale (per output channel or per tensor), if 8 bits or fewer."""
    quantizer = _only(layer, "weight")
    if isinstance(quantizer, WeightFakeQuant) and quantizer.bits <= 8:
        return quantizer.levels(layer.parametrizations.weight.original), quantizer.scale
    if isinstance(quantizer, DequantizedWeight) and quantizer.levels.element_size() == 1:
        levels = quantizer.levels.to(torch.float32)
        if quantizer.zero_point is not None:
            levels = levels - broadcast(quantizer.zero_point.to(torch.float32), levels.dim(), quantizer.axis)
        return levels, quantizer.scale
    return None


def _bias(layer: nn.Module) -> torch.Tensor | None | bool:
    """The bias's int32 levels, ``None`` without a bias, ``False`` for a bias no int8 kernel takes."""
    if layer.bias is None:
        return None
    quantizer = _only(layer, "bias")
    if isinstance(quantizer, BiasFakeQuant):
        return quantizer.levels(layer.parametrizations.bias.original)
    if isinstance(quantizer, DequantizedWeight) and quantizer.levels.dtype == torch.int32:
        return quantizer.levels.to(torch.float32)
    return False


def _zero_clamp_ok(grid: Grid, clamped: bool) -> bool:
    """A ReLU (or a clip at zero) between an op and its quantizer folds into the kernel only when
    the quantizer's zero point is the container's minimum (ONNX Runtime's ``ReluQuantFusion``)."""
    return not clamped or (grid.zero_point == 0 and grid.low == 0)


def _layer_kernel(layer: nn.Module, source: nn.Module, output: nn.Module,
                  clamped: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``QLinearConv``/``QGemm`` of ``layer`` between ``source``'s and ``output``'s grids, as a
    function of the layer's input; ``None`` where ONNX Runtime runs no such kernel."""
    grid, out = grid_of(source), grid_of(output)
    weight, bias = _weight(layer), _bias(layer)
    if grid is None or out is None or weight is None or bias is False or not _zero_clamp_ok(out, clamped):
        return None
    levels, scale = weight

    def kernel(x: torch.Tensor) -> torch.Tensor:
        acc = accumulate(layer, grid.levels(x), levels, bias, max(abs(grid.low), abs(grid.high)))
        multiplier = output_multiplier(grid.scale, scale.reshape(-1), out.scale)
        if not isinstance(layer, nn.Linear):
            multiplier = multiplier.reshape([-1] + [1] * (acc.dim() - 2))
        return out.values(requantize(acc, multiplier, out))

    return kernel


def exact_layer(x: torch.Tensor, layer: nn.Module, source: nn.Module, output: nn.Module,
                clamped: bool = False) -> torch.Tensor:
    """``layer(x)``, or in evaluation ``QLinearConv``/``QGemm``: ``x`` on ``source``'s grid, the
    result on ``output``'s (``clamped``: through a ReLU the kernel folds). The kernel runs as the
    layer's forward, so the layer's hooks see it."""
    kernel = _layer_kernel(layer, source, output, clamped) if _active(x) else None
    if kernel is None:
        return layer(x)
    layer.forward = kernel
    try:
        return layer(x)
    finally:
        del layer.forward


def _grids(*modules: nn.Module) -> list[Grid] | None:
    grids = [grid_of(m) for m in modules]
    return None if None in grids else grids  # type: ignore[return-value]


def exact_add(a: torch.Tensor, b: torch.Tensor, source_a: nn.Module, source_b: nn.Module, output: nn.Module,
              clamped: bool = False) -> torch.Tensor:
    """``a + b``, or in evaluation ``QLinearAdd``. ONNX Runtime adds a broadcast operand as the
    kernel's second one (``qlinear_binary_op.cc``), so it goes second here too; operands that both
    broadcast stay float (not seen in the models here)."""
    if _active(a, b):
        grids = _grids(source_a, source_b, output)
        shape = torch.broadcast_shapes(a.shape, b.shape)
        if grids is not None and _zero_clamp_ok(grids[2], clamped) and shape in (a.shape, b.shape):
            ga, gb, out = grids
            first, second = (a, ga), (b, gb)
            if a.shape != shape:
                first, second = second, first
            levels = qlinear_add(first[1].levels(first[0]), first[1], second[1].levels(second[0]).expand(shape),
                                 second[1], out)
            return out.values(levels)
    return a + b


def exact_mul(a: torch.Tensor, b: torch.Tensor, source_a: nn.Module, source_b: nn.Module, output: nn.Module,
              clamped: bool = False) -> torch.Tensor:
    """``a * b``, or in evaluation ``QLinearMul`` (broadcasting)."""
    if _active(a, b):
        grids = _grids(source_a, source_b, output)
        if grids is not None and _zero_clamp_ok(grids[2], clamped):
            ga, gb, out = grids
            return out.values(qlinear_mul(ga.levels(a), ga, gb.levels(b), gb, out))
    return a * b


def exact_global_average_pool(x: torch.Tensor, source: nn.Module, output: nn.Module) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, 1)``, or in evaluation ``QLinearGlobalAveragePool``."""
    if _active(x) and x.dim() == 4:
        grids = _grids(source, output)
        if grids is not None:
            grid, out = grids
            return out.values(qlinear_global_average_pool(grid.levels(x), grid, out))
    return F.adaptive_avg_pool2d(x, 1)


def exact_sigmoid(x: torch.Tensor, source: nn.Module, output: nn.Module) -> torch.Tensor:
    """``sigmoid(x)``, or in evaluation ONNX Runtime's logistic function, which ``QLinearSigmoid``'s
    lookup table holds (quantized by ``output`` after this)."""
    if _active(x) and _grids(source, output) is not None:
        return logistic(x)
    return torch.sigmoid(x)


_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_ADDS = {operator.add, torch.add}
_MULS = {operator.mul, torch.mul}
_SIGMOIDS = {torch.sigmoid, F.sigmoid}


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """Which dispatcher, if any, can stand for ``node``."""
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, _LAYERS) and len(node.args) == 1 and not node.kwargs and \
                getattr(module, "padding_mode", "zeros") == "zeros":
            return "layer"
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            return "pool"
        return "sigmoid" if isinstance(module, nn.Sigmoid) else None
    binary = len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args)
    if node.op == "call_function":
        if binary and node.target in _ADDS:
            return "add"
        if binary and node.target in _MULS:
            return "mul"
        if node.target is F.adaptive_avg_pool2d and tuple(node.args[1:]) in ((1,), ((1, 1),)) and not node.kwargs:
            return "pool"
        return "sigmoid" if node.target in _SIGMOIDS and len(node.args) == 1 and not node.kwargs else None
    if node.op == "call_method":
        if binary and node.target in ("add", "mul"):
            return node.target
        return "sigmoid" if node.target == "sigmoid" and len(node.args) == 1 and not node.kwargs else None
    return None


_DISPATCH = {"layer": exact_layer, "add": exact_add, "mul": exact_mul, "pool": exact_global_average_pool,
             "sigmoid": exact_sigmoid}
_ARITY = {"layer": 1, "add": 2, "mul": 2, "pool": 1, "sigmoid": 1}


def _is_quantizer(node: object, modules: dict[str, nn.Module], kinds: tuple[type, ...]) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and isinstance(modules.get(node.target), kinds)


def _output(node: fx.Node, modules: dict[str, nn.Module], clamps: bool) -> tuple[fx.Node | None, bool]:
    """The quantizer that ``node``'s value reaches through nothing (or, with ``clamps``, through
    clamps at zero and identities only), and whether a clamp was passed."""
    current, clamped = node, False
    while len(current.users) == 1:
        user = next(iter(current.users))
        if _is_quantizer(user, modules, (ActFakeQuant,)):
            return user, clamped
        if not clamps or not chain_step(user, modules)[0] or user.args[0] is not current or \
                step_kind(user, modules) == "other":
            break
        current, clamped = user, clamped or step_kind(user, modules) == "clamp"
    return None, False


def install(gm: fx.GraphModule) -> int:
    """Replace every op of ``gm`` (a quantized model's graph) that reads quantized tensors only and
    whose result is quantized by a dispatcher (module docstring). Returns how many were replaced."""
    modules = dict(gm.named_modules())
    graph = gm.graph
    replaced = 0
    for node in list(graph.nodes):
        kind = _kind(node, modules)
        if kind is None:
            continue
        sources = node.args[:_ARITY[kind]]
        if not all(_is_quantizer(s, modules, (ActFakeQuant, SameGridQuant)) for s in sources):
            continue
        output, clamped = _output(node, modules, clamps=kind in ("layer", "add", "mul"))
        if output is None:
            continue
        with graph.inserting_before(node):
            quantizers = tuple(graph.get_attr(n.target) for n in (*sources, output))
            if kind == "layer":
                args = (sources[0], graph.get_attr(node.target), *quantizers, clamped)
            elif kind in ("add", "mul"):
                args = (*sources, *quantizers, clamped)
            else:
                args = (sources[0], *quantizers)
            dispatcher = graph.call_function(_DISPATCH[kind], args)
        node.replace_all_uses_with(dispatcher)
        graph.erase_node(node)
        replaced += 1
    graph.lint()
    gm.recompile()
    return replaced
