import numpy as np
import pytest
import torch
from torch import nn

import sonify
from sonify import SonifyError
from sonify.capture import GradientCapture
from sonify.layers import MAX_VOICES, group_layers, select_layers
from sonify.norms import layer_rows


def reference_norms(layers):
    """Each layer's L2 norm over all its gradients, computed independently in float64."""
    norms = []
    for layer in layers:
        grads = [p.grad.to_dense().double().flatten() for p in layer.parameters if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.cat(grads)).item() if grads else np.nan)
    return np.array(norms)


def captured(layers):
    capture = GradientCapture(layers)
    capture.submit(1)
    ((step, norms, missing),) = capture.drain()
    assert step == 1
    return np.where(missing, np.nan, norms), missing


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.block = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32), nn.Linear(32, 32))
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.block(self.conv(x).flatten(1)[:, :64]))


def backward(model, inputs):
    model.zero_grad()
    model(inputs).square().sum().backward()


@pytest.mark.parametrize(
    ("layers", "params", "names"),
    [
        (None, "all", ["conv", "block.0", "block.1", "block.2", "head"]),
        (None, "weight", ["conv", "block.0", "block.1", "block.2", "head"]),
        (["block", "head"], "all", ["block", "head"]),
        (["block.*"], "weight", ["block.0", "block.1", "block.2"]),
        (nn.Linear, "all", ["block.0", "block.2", "head"]),
        ((nn.Conv2d, nn.LayerNorm), "all", ["conv", "block.1"]),
        (lambda name, m: name.endswith("2") or name == "conv", "all", ["conv", "block.2"]),
        (None, lambda name, p: name == "bias", ["conv", "block.0", "block.1", "block.2", "head"]),
    ],
)
def test_norms_equal_an_independent_reference(layers, params, names):
    torch.manual_seed(0)
    model = Net()
    selected = select_layers(model, layers, params)
    assert [layer.name for layer in selected] == names
    backward(model, torch.randn(5, 1, 6, 6))
    norms, missing = captured(selected)
    assert not missing.any()
    np.testing.assert_allclose(norms, reference_norms(selected), rtol=1e-5)
    if params == "weight":
        assert all(all(n.endswith("weight") for n in layer.parameter_names) for layer in selected)


def test_reference_lenet_layers_are_the_four_weights():
    from sonify.experiment import REFERENCE_LAYERS, LeNet

    model = LeNet()
    selected = select_layers(model, list(REFERENCE_LAYERS), "weight")
    assert [layer.parameter_names for layer in selected] == [(f"{n}.weight",) for n in REFERENCE_LAYERS]
    backward(model, torch.randn(3, 1, 28, 28))
    norms, _ = captured(selected)
    expected = [torch.linalg.vector_norm(getattr(model, n).weight.grad).item() for n in REFERENCE_LAYERS]
    np.testing.assert_allclose(norms, expected, rtol=1e-6)


def test_shared_parameters_count_once_and_frozen_modules_are_skipped():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10))
    model[2].weight = model[0].weight  # tied embedding / output weights
    model[1].requires_grad_(False)
    selected = select_layers(model)
    assert [layer.name for layer in selected] == ["0", "2"]
    assert selected[1].parameter_names == ("2.bias",)  # the tied weight belongs to layer 0 only
    model(torch.tensor([1, 2, 3])).sum().backward()
    norms, _ = captured(selected)
    np.testing.assert_allclose(norms, reference_norms(selected), rtol=1e-5)


def test_layers_without_gradient_are_missing_not_zero_and_sparse_grads_work():
    model = nn.ModuleDict({"used": nn.Linear(3, 3), "unused": nn.Linear(3, 3), "emb": nn.Embedding(8, 3, sparse=True)})
    model["frozen"] = nn.Linear(3, 3).requires_grad_(False)
    selected = select_layers(model, ["used", "unused", "emb", "frozen"])
    (model["used"](model["emb"](torch.tensor([1, 1, 5])))).sum().backward()
    norms, missing = captured(selected)
    np.testing.assert_array_equal(missing, [False, True, False, True])
    expected = [
        torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model["used"].parameters()])).item(),
        torch.linalg.vector_norm(model["emb"].weight.grad.to_dense()).item(),
    ]
    np.testing.assert_allclose(norms[[0, 2]], expected, rtol=1e-5)


def test_half_precision_gradients_do_not_overflow():
    layer = nn.Linear(1000, 100).half()
    layer.weight.grad = torch.full_like(layer.weight, 60000.0)
    selected = select_layers(layer, params="weight")
    norms, _ = captured(selected)
    assert norms[0] == pytest.approx(60000.0 * np.sqrt(100_000), rel=1e-3)  # far beyond float16's 65504


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_norm_calls_per_step(monkeypatch, dtype):
    """On the CPU one norm per gradient, read at once (cheaper than a fused call and a stack there, and
    .item() synchronises nothing on the CPU); the fused call where gradients need a common dtype (and on
    a GPU, where a per-gradient .item() would wait for the device each time)."""
    model = Net().to(dtype)
    selected = select_layers(model)
    calls = {"foreach": 0, "vector_norm": 0}
    fused, single = torch._foreach_norm, torch.linalg.vector_norm

    def counting_foreach(*args, **kwargs):
        calls["foreach"] += 1
        return fused(*args, **kwargs)

    def counting_single(*args, **kwargs):
        calls["vector_norm"] += 1
        return single(*args, **kwargs)

    monkeypatch.setattr(torch, "_foreach_norm", counting_foreach)
    monkeypatch.setattr(torch.linalg, "vector_norm", counting_single)
    capture = GradientCapture(selected)
    for step in range(1, 6):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        capture.submit(step)
    assert len(capture.ready()) == 5
    gradients = len(capture.parameters)
    expected = (
        {"foreach": 0, "vector_norm": 5 * gradients} if dtype == torch.float32 else {"foreach": 5, "vector_norm": 0}
    )
    assert calls == expected


def test_selection_errors_are_one_line():
    with pytest.raises(SonifyError, match=r"no module named 'fc9'.*conv, block\.0"):
        select_layers(Net(), ["fc9"])
    with pytest.raises(SonifyError, match="params="):
        select_layers(Net(), params="weights")
    with pytest.raises(SonifyError, match="no layers with parameters"):
        select_layers(nn.ReLU())


# -- grouping -----------------------------------------------------------------


def deep_model():
    torch.manual_seed(0)
    block = lambda: nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 6))  # noqa: E731
    return nn.Sequential(
        nn.ModuleDict({"stem": nn.Linear(6, 6)}),
        nn.Sequential(block(), block()),
        nn.Sequential(block()),
        nn.Linear(6, 1),
    )


def backward_deep(model):
    model.zero_grad()
    x = torch.randn(5, 6)
    for m in model:
        x = m["stem"](x) if isinstance(m, nn.ModuleDict) else m(x)
    x.square().mean().backward()


@pytest.mark.parametrize(
    ("group", "names"),
    [
        (None, None),
        (1, ["0", "1", "2", "3"]),
        (2, ["0.stem", "1.0", "1.1", "2.0", "3"]),
        (r"^\d+\.\d+", ["0.stem", "1.0", "1.1", "2.0", "3"]),
        (r"^(\d+)\.", ["0", "1", "2", "3"]),
        (lambda name: "body" if name.startswith(("1", "2")) else "ends", ["ends", "body"]),
    ],
)
def test_group_norm_is_the_l2_norm_over_all_its_gradients(group, names):
    model = deep_model()
    layers = group_layers(select_layers(model), group)
    if names is not None:
        assert [layer.name for layer in layers] == names
    backward_deep(model)
    np.testing.assert_allclose(captured(layers)[0], reference_norms(layers), rtol=1e-5)
    assert sum(len(layer.parameters) for layer in layers) == len(list(model.parameters()))


def test_auto_grouping_keeps_small_models_and_groups_large_ones():
    small = select_layers(deep_model())
    assert group_layers(small, "auto") == small  # 10 layers: every one is heard
    wide = nn.Sequential(*[nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)) for _ in range(12)])
    grouped = group_layers(select_layers(wide), "auto")  # 24 layers -> the 12 blocks
    assert [g.name for g in grouped] == [str(i) for i in range(12)]
    flat = nn.Sequential(*[nn.Linear(2, 2) for _ in range(40)])
    runs = group_layers(select_layers(flat), "auto")  # no prefix helps: runs of 3 consecutive layers
    assert len(runs) <= MAX_VOICES and runs[0].name == "0..2" and runs[-1].name == "39"


def test_wrapper_names_do_not_count_as_depth():
    wrapped = nn.Sequential()
    wrapped.add_module("module", deep_model())  # as DistributedDataParallel names it
    # the same names as the unwrapped model's, so runs with and without DDP compare
    assert [g.name for g in group_layers(select_layers(wrapped), 1)] == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("group", "message"), [(0, "group depth 0"), ("([", "not a valid regular expression"), (2.5, "not understood")]
)
def test_bad_groups_are_clear_errors(group, message):
    with pytest.raises(SonifyError, match=message):
        group_layers(select_layers(deep_model()), group)


def exact_norms(layers):
    """Each layer's norm in exact arithmetic: float64 after scaling by the largest element, so nothing overflows."""
    norms = []
    for layer in layers:
        values = [
            (torch.view_as_real(p.grad) if p.grad.is_complex() else p.grad).double().flatten()
            for p in layer.parameters
            if p.grad is not None
        ]
        flat = torch.cat(values)
        largest = flat.abs().max()
        norms.append((largest * torch.linalg.vector_norm(flat / largest)).item() if largest > 0 else 0.0)
    return np.array(norms)


@pytest.mark.filterwarnings("ignore:Complex modules")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64])
def test_every_dtype_gives_correct_norms(dtype):
    torch.manual_seed(0)
    model = Net()
    model.block[0].to(dtype)  # a model of mixed precision too
    model.head.to(dtype)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    layers = select_layers(model)
    norms, missing = captured(layers)
    assert not missing.any()
    # float16/bfloat16 gradients are summed in float32: relative error a few float32 epsilons.
    np.testing.assert_allclose(norms, exact_norms(layers), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_norms_overflow_only_where_the_true_value_does(dtype):
    huge = 1e300 if dtype == torch.float64 else 1e30
    layer = nn.Linear(3, 2).to(dtype)
    layer.weight.grad = torch.zeros_like(layer.weight)
    layer.weight.grad[0, 0] = huge  # finite in the model; its square is not
    layer.weight.grad[1, 2] = huge
    layer.bias.grad = torch.ones_like(layer.bias)
    norms, _ = captured(select_layers(layer))
    expected = exact_norms(select_layers(layer))
    assert np.isfinite(norms).all() and np.isfinite(expected).all()
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
    layer.bias.grad[0] = float("inf")  # a real Inf still sounds the alarm
    assert np.isinf(captured(select_layers(layer))[0]).all()


def test_a_parameter_replaced_in_its_module_is_followed():
    model = Net()
    layers = select_layers(model)
    capture = GradientCapture(layers)
    fresh = Net()
    model.load_state_dict(fresh.state_dict(), assign=True)  # new Parameter objects in the modules
    backward(model, torch.randn(2, 1, 10, 10))
    capture.submit(1)
    ((_, norms, missing),) = capture.drain()
    assert not missing.any()  # the stale parameters (without gradients) were replaced by the live ones
    np.testing.assert_allclose(norms, reference_norms(capture.layers), rtol=1e-6)


def test_norms_left_per_parameter_combine_to_the_same_layers_on_another_thread():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    layers = select_layers(model)
    capture = GradientCapture(layers)
    rows = []
    for step, poison in enumerate([None, float("nan"), 1e30, None], start=1):
        model.zero_grad()
        model(torch.randn(5, 4)).square().sum().backward()
        if poison is not None:
            model[2].bias.grad[0] = poison
        capture.submit(step)
        ((raw,),) = [capture.ready()]
        capture.submit(step)
        ((combined,),) = [capture.ready()]
        combined.norms  # noqa: B018  combined here, at once, as the live player reads them
        rows.append((raw, combined))
    raw_items = [raw for raw, _ in rows]
    assert all(item.segments is not None for item in raw_items)  # still per parameter: combined by layer_rows
    steps, norms, missing = layer_rows(raw_items + [combined for _, combined in rows])
    assert steps.tolist() == [1, 2, 3, 4] * 2 and not missing.any()
    np.testing.assert_array_equal(norms[:4], norms[4:])  # the same numbers, wherever they are combined
    assert np.isnan(norms[1, 1]) and norms[2, 1] == pytest.approx(1e30)  # NaN kept, a huge norm exact
    np.testing.assert_allclose(norms[3], reference_norms(layers), rtol=1e-6)  # the last step, independently


def backward_through_every_parameter(model):
    """A backward that gives every parameter (any dtype, complex too) a gradient through autograd."""
    terms = []
    for p in model.parameters():
        product = p * torch.randn_like(p)
        terms.append((product.real if p.is_complex() else product).sum().float())
    torch.stack(terms).sum().backward()


@pytest.mark.filterwarnings("ignore:Complex modules")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64])
def test_norms_taken_during_backward_are_those_of_the_gradients_the_step_applies(dtype):
    torch.manual_seed(0)
    model = Net()
    model.block[0].to(dtype)
    model.head.to(dtype)
    layers = select_layers(model)
    capture = GradientCapture(layers, early=True)
    assert capture.early
    backward_through_every_parameter(model)
    assert all(entry is not None for entry in capture._early._entries)  # every norm was taken inside backward
    capture.submit(1)
    ((_, first, missing),) = capture.drain()
    assert not missing.any()
    np.testing.assert_allclose(first, exact_norms(layers), rtol=1e-6)
    # Changed after their hooks ran: accumulated by a second backward (the hooks run again), then scaled
    # in place (as clipping and AMP unscaling do), and one replaced outright.
    backward_through_every_parameter(model)
    for p in model.parameters():
        p.grad.mul_(0.5)
    model.head.bias.grad = torch.randn_like(model.head.bias) * 7
    capture.submit(2)
    ((_, second, _),) = capture.drain()
    np.testing.assert_allclose(second, exact_norms(layers), rtol=1e-6)
    assert not np.allclose(first, second)
    capture.remove_hooks()
    assert not any(p._post_accumulate_grad_hooks for p in model.parameters())


def test_norms_taken_during_backward_keep_no_gradient_alive():
    import gc
    import weakref

    model = Net()
    capture = GradientCapture(select_layers(model), early=True)
    backward(model, torch.randn(2, 1, 10, 10))
    old = weakref.ref(model.head.weight.grad)
    model.zero_grad(set_to_none=True)
    gc.collect()
    assert old() is None  # a model of 7 B parameters must not hold a second set of gradients
    capture.submit(1)
    ((_, _, missing),) = capture.drain()
    assert missing.all()
    capture.remove_hooks()


def test_norms_are_read_at_the_step_unless_asked_otherwise():
    assert not GradientCapture(select_layers(Net())).early
    with pytest.raises(sonify.SonifyParameterError, match="early='sometimes' is not understood"):
        GradientCapture(select_layers(Net()), early="sometimes")


def test_what_norms_taken_during_backward_see_of_later_changes():
    """Exactly what ``early=True`` notices: every in-place change through the gradient or a view of it
    (torch's version counter), but not one through ``.data``, which has a counter of its own."""
    torch.manual_seed(0)
    model = Net()
    layers = select_layers(model)
    early, at_step = GradientCapture(layers, early=True), GradientCapture(layers)
    seen = {}
    for change in ("mul_", "detach().mul_", "clip_grad_norm_", "data.mul_"):
        model.zero_grad()
        backward_through_every_parameter(model)
        if change == "clip_grad_norm_":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
        for p in model.parameters():
            if change == "mul_":
                p.grad.mul_(3.0)
            elif change == "detach().mul_":
                p.grad.detach().mul_(3.0)
            elif change == "data.mul_":
                p.grad.data.mul_(3.0)
        early.submit(1)
        at_step.submit(1)
        ((_, norms, _),), ((_, reference, _),) = early.drain(), at_step.drain()
        np.testing.assert_allclose(reference, exact_norms(layers), rtol=1e-6)  # the default sees every change
        seen[change] = np.allclose(norms, reference, rtol=1e-6)
    assert seen == {"mul_": True, "detach().mul_": True, "clip_grad_norm_": True, "data.mul_": False}
    early.remove_hooks()
