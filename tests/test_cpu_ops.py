"""The C++ ops as torch.library custom ops: opcheck, torch.compile(fullgraph=True) and torch.export against eager."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from helpers import random_model, random_state, torch_threads
from nrnm_fast import NRNMState, available_backends

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="C++ extension not built")


def _layer_args(requires_grad: bool, for_backward: bool = True, batch_shards: int = 1):
    from nrnm_fast.layer_ops import pack_weights

    torch.manual_seed(0)
    model = random_model(3, 4, block_size=3, stride=2, num_slots=2, num_heads=2, backend="cpu")
    state = random_state(model, 2, [0, 3]).layer(0)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=requires_grad)
    weights = [w.detach().requires_grad_(requires_grad) for w in pack_weights(model.layer_weights(0))]
    floats = [t.detach().requires_grad_(requires_grad and t.is_floating_point()) for t in state]
    return (x, torch.tensor([5, 3]), *floats, weights, 3, 2, 2, False, for_backward, batch_shards)


@pytest.mark.parametrize("batch_shards", [1, 2])
@pytest.mark.parametrize("requires_grad, for_backward", [(False, False), (False, True), (True, True)])
def test_opcheck_layer_forward(requires_grad, for_backward, batch_shards):
    torch.library.opcheck(torch.ops.nrnm_fast.layer_forward.default,
                          _layer_args(requires_grad, for_backward, batch_shards))


def test_inference_keeps_nothing_for_the_backward_and_computes_the_same():
    """Without for_backward the op returns empty cells, gates, r, kept and memories, and the same output and state."""
    training = torch.ops.nrnm_fast.layer_forward(*_layer_args(False, True))
    inference = torch.ops.nrnm_fast.layer_forward(*_layer_args(False, False))
    assert [t.numel() for t in inference[9:]] == [0, 0, 0, 0, 0]
    assert all(t.numel() > 0 for t in training[9:])
    for a, b in zip(inference[:9], training[:9]):
        assert torch.equal(a, b)


def test_forward_without_for_backward_refuses_a_gradient():
    with pytest.raises(RuntimeError, match="for_backward=True"):
        torch.ops.nrnm_fast.layer_forward(*_layer_args(True, False))


def _backward_args(batch_shards: int, input_grad: bool):
    args = _layer_args(False, batch_shards=batch_shards)
    out = torch.ops.nrnm_fast.layer_forward(*args)
    x, lengths, h0, c0, _m0, _w0, _e0, steps0, weights = args[:9]
    grads = [torch.randn_like(t) for t in out[:6]]
    return (*grads, x, lengths, h0, c0, steps0, *out[7:], weights, 3, 2, 2, False, input_grad, batch_shards)


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("batch_shards", [1, 2])
def test_opcheck_layer_backward(batch_shards, input_grad):
    torch.library.opcheck(torch.ops.nrnm_fast.layer_backward.default, _backward_args(batch_shards, input_grad))


@pytest.mark.parametrize("batch_shards", [1, 2])
def test_backward_without_input_grad_skips_only_grad_x(batch_shards):
    """input_grad=False returns an empty grad_x and every other gradient unchanged."""
    with_x = torch.ops.nrnm_fast.layer_backward(*_backward_args(batch_shards, True))
    without_x = torch.ops.nrnm_fast.layer_backward(*_backward_args(batch_shards, False))
    assert with_x[0].shape == (5, 2, 3) and with_x[0].abs().max() > 0
    assert without_x[0].numel() == 0
    for a, b in zip([*with_x[1:6], *with_x[6]], [*without_x[1:6], *without_x[6]]):
        assert torch.equal(a, b)


def test_backward_makes_no_zero_gradients_for_the_saved_tensors():
    """The op's saved-tensor outputs never get a gradient: autograd must not make zeros of their shapes.

    With autograd's default (materialized gradients) every output without one came to the backward
    as zeros of its shape: the (T, B, 4H) gates alone are a third of what the forward keeps.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    args = _layer_args(True)
    out = torch.ops.nrnm_fast.layer_forward(*args)
    grad = torch.randn_like(out[0])

    class Allocations(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if any(word in func.__name__ for word in ("zeros", "empty", "full")):
                self.shapes.add(tuple(result.shape))
            return result

    with Allocations() as allocations:
        out[0].backward(grad)
    assert (2, 4) in allocations.shapes  # the final state's gradients: None, so the autograd formula's zeros
    assert not {tuple(t.shape) for t in out[7:]} & allocations.shapes


def test_batch_shards_below_one_is_refused():
    with pytest.raises(RuntimeError, match=r"batch_shards must be >= 1, got 0"):
        torch.ops.nrnm_fast.layer_forward(*_layer_args(False, True, 0))


def test_batch_shards_beyond_the_batch_run_one_shard_per_element():
    # The module passes its thread count whatever the batch (layer_ops.batch_shards): the op takes at most B.
    two, five = (torch.ops.nrnm_fast.layer_forward(*_layer_args(False, True, shards)) for shards in (2, 5))
    for a, b in zip(five, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    grads_two, grads_five = (torch.ops.nrnm_fast.layer_backward(*_backward_args(shards, True)) for shards in (2, 5))
    torch.testing.assert_close(grads_five, grads_two, rtol=0, atol=0)


def test_batch_shards_with_triton_attention_is_refused():
    args = list(_layer_args(False, True, 2))
    args[-3] = True  # triton_attention
    with pytest.raises(RuntimeError, match="with triton_attention the CPU op runs one batch shard, got batch_shards 2"):
        torch.ops.nrnm_fast.layer_forward(*args)


@pytest.mark.parametrize("threads", [1, 2])  # 2: the compiled graph runs the op in 2 batch shards
def test_torch_compile_fullgraph_matches_eager(threads):
    with torch_threads(threads):
        _compile_fullgraph_matches_eager()


def _compile_fullgraph_matches_eager():
    torch._dynamo.reset()  # the shard count is a constant of the traced graph
    model = random_model(3, 4, num_layers=2, block_size=3, stride=2, num_slots=2, num_heads=2, backend="cpu")
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    start = random_state(model, 2, [0, 3])
    lengths = torch.tensor([6, 4])
    grad_out = torch.randn(6, 2, 4, dtype=torch.float64)

    def run(module):
        model.zero_grad()
        out, state = module(x, start, lengths=lengths)
        (out * grad_out).sum().add(state.memory.sum()).backward()
        return [out.detach(), *(t.detach() for t in state)] + [p.grad.clone() for p in model.parameters()]

    eager = run(model)
    # Inductor's on-disk caches key a graph by its ops' names, not their schemas: a graph cached
    # before the ops' schemas changed would be replayed with the old arguments.
    with torch._inductor.config.patch(fx_graph_cache=False), \
            mock.patch.object(torch._functorch.config, "enable_autograd_cache", False):
        compiled = run(torch.compile(model, fullgraph=True))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("threads", [3], indirect=True)  # a shard count taken from B would recompile for each B
def test_torch_compile_dynamic_runs_other_steps_and_batches_without_recompiling(threads):
    torch._dynamo.reset()
    model = _export_model()

    def run(module, x, grad_out):
        model.zero_grad()
        out, (h, c) = module(x)
        ((out * grad_out).sum() + h.sum() + c.sum()).backward()
        return [out.detach(), h.detach(), c.detach()] + [p.grad.clone() for p in model.parameters()]

    with torch._inductor.config.patch(fx_graph_cache=False), \
            mock.patch.object(torch._functorch.config, "enable_autograd_cache", False):
        compiled = torch.compile(model, fullgraph=True, dynamic=True)
        for i, (T, B) in enumerate([(6, 2), (3, 4), (9, 5)]):  # sizes of 1 would specialize
            x, grad_out = torch.randn(T, B, 3, dtype=torch.float64), torch.randn(T, B, 4, dtype=torch.float64)
            with torch._dynamo.config.patch(error_on_recompile=i > 0):
                got = run(compiled, x, grad_out)
            torch.testing.assert_close(got, run(model, x, grad_out), rtol=0, atol=0)


def test_double_backward_is_refused_and_create_graph_keeps_first_derivatives():
    """Second derivatives through the op (a gradient penalty) raise; first ones with create_graph are exact.

    Without an autograd formula for layer_backward, autograd took it for a constant and the penalty's
    gradient came out silently wrong (zero through the recurrence).
    """
    model = random_model(3, 4, block_size=3, stride=2, num_slots=2, num_heads=2, backend="cpu")
    reference = random_model(3, 4, block_size=3, stride=2, num_slots=2, num_heads=2, backend="reference")
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(5, 2, 4, dtype=torch.float64)

    def input_grad(module):
        out, _ = module(x)
        return torch.autograd.grad((out * grad_out).sum(), x, create_graph=True)[0]

    fast = input_grad(model)
    torch.testing.assert_close(fast, input_grad(reference), rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="backward is not differentiable.*backend='reference'"):
        fast.pow(2).sum().backward()


@pytest.mark.parametrize("transform", ["jvp", "grad"])
def test_torch_func_transforms_are_refused(transform):
    """torch.func.jvp ran the op on the primal values alone and returned zero tangents; every transform raises."""
    model = random_model(3, 4, block_size=3, stride=2, num_slots=2, num_heads=2, backend="cpu")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="do not support torch.func transforms.*backend='reference'"):
        if transform == "jvp":
            torch.func.jvp(lambda xx: model(xx)[0], (x,), (torch.randn_like(x),))
        else:
            torch.func.grad(lambda xx: model(xx)[0].sum())(x)


def test_autocast_runs_the_op_in_its_inputs_dtype():
    """Under torch.autocast the op computes in float32, forward and backward (even inside the region).

    Autocast reached the GEMMs inside the op, whose bfloat16 products then met float32 kernels:
    NotImplementedError from deep inside the layer.
    """
    model = random_model(3, 4, block_size=3, stride=2, num_slots=2, num_heads=2, dtype=torch.float32, backend="cpu")
    x = torch.randn(5, 2, 3, requires_grad=True)
    grad_out = torch.randn(5, 2, 4)

    def run():
        model.zero_grad()
        x.grad = None
        out, (h, c) = model(x)
        (out * grad_out).sum().add(c.sum()).backward()
        return [out.detach(), h.detach(), c.detach(), x.grad] + [p.grad.clone() for p in model.parameters()]

    plain = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = run()
    for a, b in zip(autocast, plain):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("lengths, steps, message", [
    ([0, 3], [0, 3], r"lengths must lie in 1\.\.5, got 0\.\.3"),
    ([5, 6], [0, 3], r"lengths must lie in 1\.\.5, got 5\.\.6"),
    ([5, 3], [0, -1], r"steps0 must be >= 0"),
])
def test_op_refuses_lengths_and_steps_out_of_range(lengths, steps, message):
    """The op's own checks (the module checks first, with its ValueErrors): read on the host, not by reductions."""
    args = list(_layer_args(False))
    args[1], args[7] = torch.tensor(lengths), torch.tensor(steps)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.nrnm_fast.layer_forward(*args)


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def threads(request):
    """torch's thread count: with 3 the op runs min(3, B) batch shards, and a graph whose shard count
    depended on a symbolic B would have to guard on B >= 3."""
    with torch_threads(request.param):
        yield request.param


def _export_model():
    return random_model(3, 4, num_layers=2, block_size=3, stride=2, num_slots=2, num_heads=2, backend="cpu")


def test_torch_export_with_symbolic_steps_and_batch_matches_eager(threads):
    """An inference graph exported once, with T and B symbolic, runs other T and B as eager does."""
    model = _export_model().eval()
    sizes = {0: torch.export.Dim("T"), 1: torch.export.Dim("B")}
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(6, 2, 3, dtype=torch.float64),), dynamic_shapes=(sizes,))
        for T, B in [(1, 1), (5, 3), (9, 4)]:  # T = 1 and 5: no update / not a multiple of the stride
            x = torch.randn(T, B, 3, dtype=torch.float64)
            torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


def test_torch_export_of_a_padded_batch_with_symbolic_sizes(threads):
    model = _export_model().eval()
    T, B = torch.export.Dim("T"), torch.export.Dim("B")
    example = (torch.randn(6, 3, 3, dtype=torch.float64), None, torch.tensor([6, 2, 4]))
    with torch.no_grad():
        program = torch.export.export(model, example, dynamic_shapes=({0: T, 1: B}, None, {0: B}))
        for lengths in ([9, 1, 5, 7], [4, 4]):  # T = max(lengths); ties, a length of 1
            x, lengths = torch.randn(max(lengths), len(lengths), 3, dtype=torch.float64), torch.tensor(lengths)
            torch.testing.assert_close(program.module()(x, None, lengths), model(x, None, lengths), rtol=0, atol=0)
        with pytest.raises(RuntimeError, match=r"lengths must lie in 1\.\.4, got 2\.\.5"):  # the op checks them
            program.module()(torch.randn(4, 2, 3, dtype=torch.float64), None, torch.tensor([5, 2]))


class _Step(torch.nn.Module):
    """(x, NRNMState) -> (output, NRNMState): a streamed step as a deployed model runs it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, state):
        return self.model(x, state)


def _export_step(model, steps_symbolic: bool):
    """``_Step(model)`` exported without gradients, with a symbolic batch (and T, if ``steps_symbolic``)."""
    B = torch.export.Dim("B")
    x_sizes = {0: torch.export.Dim("T"), 1: B} if steps_symbolic else {1: B}
    state_sizes = NRNMState(*([{1: B}] * 5), {0: B})  # steps (B,); the rest (L, B, ...)
    example = (torch.randn(2, 2, 3, dtype=torch.float64), random_state(model, 2, [0, 1]))
    with torch.no_grad():
        return torch.export.export(_Step(model), example, dynamic_shapes=(x_sizes, state_sizes))


def test_torch_export_of_a_streamed_step_with_its_state_saves_and_loads(threads, tmp_path):
    model = _export_model().eval()
    program = _export_step(model, steps_symbolic=False)
    torch.export.save(program, tmp_path / "step.pt2")  # the state's NamedTuple needs a registered name
    loaded = torch.export.load(tmp_path / "step.pt2")
    with torch.no_grad():
        for steps in ([5], [0, 2, 7]):
            x, state = torch.randn(2, len(steps), 3, dtype=torch.float64), random_state(model, len(steps), steps)
            want = model(x, state)
            torch.testing.assert_close(program.module()(x, state), want, rtol=0, atol=0)
            torch.testing.assert_close(loaded.module()(x, state), want, rtol=0, atol=0)


def test_torch_export_for_training_with_symbolic_steps_matches_eager_gradients(threads):
    """Exported with gradients on, a symbolic T, down to T = 1 (one update at most), trains as eager does."""
    model = _export_model()
    x0 = torch.randn(6, 2, 3, dtype=torch.float64)
    program = torch.export.export(model, (x0,), dynamic_shapes=({0: torch.export.Dim("T")},))
    exported = program.module()
    for T in (1, 2, 7):
        x = torch.randn(T, 2, 3, dtype=torch.float64, requires_grad=True)
        grad_out = torch.randn(T, 2, 4, dtype=torch.float64)
        results = []
        for module in (exported, model):
            x.grad = None
            module.zero_grad()
            out, (h, c) = module(x)
            ((out * grad_out).sum() + h.sum() + c.sum()).backward()
            results.append([out.detach(), h.detach(), c.detach(), x.grad.clone()]
                           + [p.grad.clone() for _, p in sorted(module.named_parameters())])
        torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_aot_inductor_package_runs_the_exported_op(tmp_path):
    """A streamed step exported with T and B symbolic, compiled ahead of time into an AOTInductor package."""
    model = _export_model().eval()
    program = _export_step(model, steps_symbolic=True)
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False):  # see _compile_fullgraph_matches_eager
        package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "nrnm.pt2"))
        runner = torch._inductor.aoti_load_package(package)
        for steps, T in [([3], 1), ([0, 2, 9], 5)]:
            x, state = torch.randn(T, len(steps), 3, dtype=torch.float64), random_state(model, len(steps), steps)
            torch.testing.assert_close(runner(x, state), model(x, state), rtol=0, atol=0)
