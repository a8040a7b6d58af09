import torch
from torch import nn

from mpqsearch.search_spaces import discover_layers


def test_every_layer_kind_is_found_with_correct_macs(example_model, example_input):
    layers = {layer.name: layer for layer in discover_layers(example_model, example_input)}
    hw = 32 * 32
    expected = {  # hand-computed for a 1x3x32x32 input
        "stem": 8 * hw * 3 * 9,
        "block.conv": 8 * hw * 8 * 9,
        "block.depthwise": 8 * hw * 1 * 9,
        "branch_a": 8 * hw * 8 * 1,
        "branch_b": 8 * hw * 8 * 9,
        "up": 16 * hw * 8 * 4,  # transposed: every input element meets out_channels * k * k weights
        "head": 8 * 10,
    }
    assert {n: layer.macs for n, layer in layers.items()} == expected
    assert list(layers) == list(expected)  # execution order
    assert layers["block.depthwise"].depthwise and not layers["block.conv"].depthwise
    assert layers["up"].kind == "ConvTranspose2d" and layers["up"].weight_shape == (16, 8, 2, 2)
    assert layers["head"].kind == "Linear" and layers["head"].kernel_size == ()
    assert layers["stem"].params == 8 * 3 * 9 + 8
    assert layers["block.conv"].stage == "block" and layers["head"].stage == "head"
    assert layers["stem"].tied_group == layers["block.depthwise"].tied_group == "tied0"
    assert layers["branch_a"].tied_group == layers["branch_b"].tied_group == "tied1"
    assert layers["block.conv"].tied_group is None


def test_conv1d_and_repeated_layers():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 5, stride=2)
            self.shared = nn.Linear(4, 4)

        def forward(self, x):
            y = self.conv(x).transpose(1, 2)
            return self.shared(self.shared(y))

    layers = {layer.name: layer for layer in discover_layers(Seq(), torch.randn(1, 2, 21))}
    assert layers["conv"].macs == 4 * 9 * 2 * 5  # output length (21 - 5) // 2 + 1 = 9
    assert layers["shared"].macs == 2 * (9 * 4 * 4)  # called twice: summed


def test_user_stage_map(example_model, example_input):
    stages = {"block": "body", "branch_a": "merge", "branch_b": "merge", "block.depthwise": "dw"}
    layers = {layer.name: layer.stage for layer in discover_layers(example_model, example_input, stages)}
    assert layers == {"stem": "stem", "block.conv": "body", "block.depthwise": "dw", "branch_a": "merge",
                      "branch_b": "merge", "up": "up", "head": "head"}
    by_callable = discover_layers(example_model, example_input, lambda name: name[:2])
    assert by_callable[0].stage == "st"
