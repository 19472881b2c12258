"""training.compile: a compiled model computes the eager model's loss and gradients, and checkpoints do not notice.

On the CPU the numerics test compiles with torch's `aot_eager` backend: TorchDynamo captures the graphs and
AOTAutograd traces forward and backward (decompositions, functionalisation) as inductor would, without
inductor's C++ code generation, which costs over a minute for even this tiny model on two cores. Inductor itself
runs in benchmarks.train_step (CPU) and in the `gpu` test below, on CUDA, within the same tolerance.
"""
import pytest
import torch

from ffcv_amcl.config import parse_config
from ffcv_amcl.model.compiled import compile_model, is_compiled
from ffcv_amcl.model.ssl import build_model

# Loss and gradients of the compiled model vs the eager one, float32. Inductor on this CPU was measured at a
# relative loss difference of 3e-5 and a largest gradient difference of 1e-5 of the largest gradient
# (reordered float32 reductions); aot_eager agrees to the last bit.
RTOL, ATOL = 1e-4, 1e-5


def cfg(*extra):
    """The smallest model that still has every part: ResNet-18, 2 heads, SimCLR-AMCL, batch 4, 16 px."""
    return parse_config(["--data.train_dataset=x.beton", "--model.method=simclr", "--model.amcl=1",
                         "--model.heads=2", "--model.stem=imagenet", "--model.proj_dim=16", "--model.proj_hidden=32",
                         "--training.batch_size=4", "--data.image_size=16", *extra],
                        check_files=False, world_size=1)[0]


def views(device="cpu", n=4, side=16):
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(n, 3, side, side, generator=g).to(device, memory_format=torch.channels_last)
                 for _ in range(2))


def twins(device="cpu"):
    """(eager, to-be-compiled) models with the same weights."""
    torch.manual_seed(0)
    eager = build_model(cfg(), device=device)
    other = build_model(cfg(), device=device)
    other.load_state_dict(eager.state_dict())
    return eager, other


def loss_and_grads(model, a, b):
    out = model(a, b); loss, stats = out.loss, out.stats
    loss.backward()
    return loss.detach(), stats, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(eager, compiled, a, b, rtol=RTOL, atol=ATOL):
    le, se, ge = loss_and_grads(eager, a, b)
    lc, sc, gc = loss_and_grads(compiled, a, b)
    torch.testing.assert_close(lc, le, rtol=rtol, atol=atol)
    assert set(sc) == set(se) == {"tau_pos", "tau_neg"}
    for key in se:
        torch.testing.assert_close(sc[key], se[key], rtol=rtol, atol=atol)
    assert set(gc) == set(ge) and ge
    for name in ge:
        torch.testing.assert_close(gc[name], ge[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    return lc


def test_compiled_model_matches_eager_and_keeps_checkpoint_keys():
    from torch._dynamo.utils import counters

    eager, compiled = twins()
    keys = list(compiled.state_dict())
    graphs = counters["stats"]["unique_graphs"]
    names = compile_model(compiled, backend="aot_eager")
    assert names == ["backbone", "projector", "criterion"] and is_compiled(compiled) and not is_compiled(eager)
    assert list(compiled.state_dict()) == keys                     # no `_orig_mod.` prefix

    loss = assert_same_step(eager, compiled, *views())
    assert counters["stats"]["unique_graphs"] >= graphs + 3        # really traced, no silent eager fallback

    # A compiled model's checkpoint loads, strictly, into an eager model, which computes the same loss.
    fresh = build_model(cfg())
    fresh.load_state_dict(compiled.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(*views())[0], loss, rtol=RTOL, atol=ATOL)


def test_the_amcl_loss_is_one_graph_when_its_heads_do_not_divide_among_the_threads():
    """3 heads on 2 threads: eagerly one gemm per head (losses.pairs); traced, one graph with one bmm."""
    from ffcv_amcl.losses.amcl import AMCLContrastive

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loss = AMCLContrastive(8, 3, topk=4, hidden=8, validate=False)     # as the trainer builds it
        za, zb = (torch.randn(3, 6, 8, requires_grad=True) for _ in range(2))
        compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(za, zb), loss(za, zb), rtol=RTOL, atol=ATOL)
    finally:
        torch.set_num_threads(before)


def test_compile_model_can_leave_the_loss_eager_and_unwraps_ddp():
    _, model = twins()

    class Wrapper(torch.nn.Module):   # stands in for DistributedDataParallel: the method is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert compile_model(Wrapper(model), loss=False, backend="eager") == ["backbone", "projector"]
    assert is_compiled(model.backbone) and not is_compiled(model.criterion)


def test_training_compile_flag_defaults_off():
    assert cfg().training.compile == 0 and cfg("--training.compile=1").training.compile == 1


@pytest.mark.gpu
def test_inductor_on_cuda_matches_eager():
    """The real path (inductor, Triton kernels) on the GPU, float32 with TF32 off; then a bf16 autocast step."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        eager, compiled = twins("cuda")
        compile_model(compiled)
        assert_same_step(eager, compiled, *views("cuda", n=8, side=32), rtol=1e-3, atol=1e-4)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = compiled(*views("cuda", n=8, side=32))
    loss.backward()
    assert torch.isfinite(loss)
