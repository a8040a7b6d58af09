"""BatchNorm folded into the layer before it: float outputs unchanged, quantizers see the folded layer,
counts and the ONNX export too, and refined weights map back to the float model's state_dict."""

import torch
import torch.nn.functional as F
from torch import nn

from mpqsearch.policy import Policy
from mpqsearch.quant import LayerQuantConfig, analyze, quantizable_layers, quantize_model
from mpqsearch.quant.graph import layer_fingerprint
from mpqsearch.quant.weights import float_state, load_float_state
from mpqsearch.search_spaces import SearchSpace
from mpqsearch.search_spaces.costs import model_size_bytes


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm2d subclass whose forward calls F.batch_norm, then the act."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return self.act(x)


class Net(nn.Module):
    """conv-BN-ReLU (module), conv-BNAct (functional, no conv bias), a BN after an add (kept), Linear-BN1d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bnact2 = BatchNormAct(8)
        self.bn_after_add = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 6)
        self.bn_fc = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn_after_add(y + self.bnact2(self.conv2(y)))
        return self.bn_fc(self.fc(y.mean(dim=(2, 3))))


def _net() -> Net:
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():  # statistics and affine parameters far from the identity
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _inputs():
    return torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_batch_norms_after_layers_are_folded_and_float_outputs_unchanged():
    model = _net()
    analysis = analyze(model)
    assert set(analysis.folds) == {"conv1", "conv2", "fc"}  # the BN after the add has no layer before it
    assert analysis.folds["conv2"].running_mean == "bnact2.running_mean"  # functional batch norm, by its buffers
    modules = dict(analysis.graph_module.named_modules())
    assert not any(isinstance(m, nn.BatchNorm2d) and name in ("bn1",) for name, m in modules.items())
    assert analysis.sites["conv1"].chain == "clamp" and analysis.sites["conv1"].unsigned
    assert analysis.sites["conv2"].chain == "clamp" and analysis.sites["conv2"].unsigned  # BNAct's ReLU seen
    floating = {name: LayerQuantConfig(32, 32) for name in quantizable_layers(model)}
    x = _inputs()
    with torch.no_grad():
        assert torch.allclose(quantize_model(model, floating, [x])(x), model(x), rtol=1e-5, atol=1e-5)
    assert model.conv2.bias is None and model.bn1.running_mean.abs().sum() > 0  # the model itself is untouched


def test_a_model_in_train_mode_is_folded_and_left_in_train_mode():
    model = _net().train()
    assert set(analyze(model).folds) == {"conv1", "conv2", "fc"}
    assert model.training and model.bn1.training


def test_weights_are_quantized_after_folding():
    model = _net()
    x = _inputs()
    qmodel = quantize_model(model, {name: LayerQuantConfig(8, 8) for name in quantizable_layers(model)}, [x])
    quantizer = qmodel.conv1.parametrizations.weight[0]
    folded = qmodel.conv1.parametrizations.weight.original
    factor = model.bn1.weight / torch.sqrt(model.bn1.running_var + model.bn1.eps)
    expected = model.conv1.weight * factor.reshape(-1, 1, 1, 1)
    assert torch.allclose(folded, expected, atol=1e-6)
    levels = qmodel.conv1.weight / quantizer.scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-4)


def test_sizes_count_the_folded_layers():
    model = _net()
    space = SearchSpace.from_model(model, _inputs())
    conv2 = space.layer("conv2")
    assert conv2.params == 8 * 8 * 9 + 8 and conv2.folded_params == 16  # a bias from the folding
    assert space.other_params == 16  # only the unfolded batch norm's weight and bias
    fp32 = Policy.uniform(space, 32, 32)
    folded_params = sum(layer.params for layer in space.layers) + space.other_params
    assert model_size_bytes(space, fp32) == model_size_bytes(model, fp32) == 4 * folded_params


def test_refined_weights_unfold_to_the_float_models_state_dict_and_fold_back():
    model = _net()
    x = _inputs()
    configs = {name: LayerQuantConfig(8, 8) for name in quantizable_layers(model)}
    qmodel = quantize_model(model, configs, [x])
    state = float_state(qmodel, model)
    for key, value in model.state_dict().items():
        assert torch.allclose(state[key], value, atol=1e-5), key
    with torch.no_grad():  # as QAT would: move the folded weights and biases
        for layer in quantizable_layers(qmodel).values():
            layer.parametrizations.weight.original.mul_(1.01)
            bias = layer.parametrizations.bias.original if hasattr(layer.parametrizations, "bias") else layer.bias
            bias.add_(0.01)
        expected = qmodel(x)
    refined = float_state(qmodel, model)
    rebuilt = quantize_model(model, configs, [x])
    load_float_state(rebuilt, refined)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), expected, atol=1e-5)
    unfolded = _net()
    unfolded.load_state_dict(refined)  # a plain state_dict of the float model, batch norms included
    assert layer_fingerprint(unfolded) == layer_fingerprint(model)
