import pytest
import yaml

from mpqsearch import Policy, PolicyError, SearchSpace, load_policy, save_policy
from mpqsearch.quant.graph import layer_fingerprint
from mpqsearch.quant.spec import LayerQuantConfig


@pytest.fixture
def space(example_model, example_input):
    return SearchSpace.from_model(example_model, example_input)


@pytest.fixture
def policy(space):
    policy = space.policy_from_params({name: choices[-1] for name, choices in space.parameters().items()})
    policy.layers["stem"] = LayerQuantConfig(3, 5, "shift", "per_tensor", "percentile", "mse")
    policy.layers["block.depthwise"] = LayerQuantConfig(6, 5)
    policy.metrics = {"psnr": 31.25, "size_ratio": 0.2}
    policy.provenance = {"experiment": "abc123", "trial": 7, "strategy": "gamma"}
    return policy


def test_round_trip_is_exact(tmp_path, policy, example_model):
    path = save_policy(policy, tmp_path / "p.yaml")
    assert load_policy(path) == policy
    assert load_policy(path, example_model) == policy
    save_policy(load_policy(path), tmp_path / "q.yaml")
    assert (tmp_path / "q.yaml").read_text() == path.read_text()


def _write(tmp_path, data):
    path = tmp_path / "bad.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _mutate(policy, change):
    data = policy.to_dict()
    change(data)
    return data


BAD = {
    "not_yaml": ("layers: [unclosed", r"bad.yaml: not valid YAML at line \d"),
    "not_mapping": ("- 1\n- 2\n", "bad.yaml: a policy file must be a YAML mapping"),
    "unknown_top_key": (lambda d: d.update(extra=1), "bad.yaml: extra: unknown key"),
    "schema_version": (lambda d: d.update(schema_version=99), "bad.yaml: schema_version: expected 1, got 99"),
    "unknown_layer": (lambda d: d["layers"].update(conv9={"weight_bits": 8, "act_bits": 8}),
                      "bad.yaml: layers.conv9: unknown layer"),
    "missing_layer": (lambda d: d["layers"].pop("head"), "bad.yaml: layers.head: missing layer"),
    "bits_out_of_range": (lambda d: d["layers"]["up"].update(weight_bits=17),
                          r"bad.yaml: layers.up.weight_bits: bits must be 2..16 or 32, got 17"),
    "bits_wrong_type": (lambda d: d["layers"]["up"].update(act_bits="8"),
                        "bad.yaml: layers.up.act_bits: bits must be an integer, got '8'"),
    "bad_scale": (lambda d: d["layers"]["up"].update(scale="log"),
                  "bad.yaml: layers.up.scale: scale must be one of product, shift, got 'log'"),
    "unknown_setting": (lambda d: d["layers"]["up"].update(bitz=3), "bad.yaml: layers.up.bitz: unknown setting"),
    "missing_setting": (lambda d: d["layers"]["up"].pop("act_bits"), "bad.yaml: layers.up.act_bits: missing"),
    "layer_not_mapping": (lambda d: d["layers"].update(up=8), "bad.yaml: layers.up: must be a mapping"),
    "bad_shape": (lambda d: d["model"]["layers"].update(up=[16, -8]), "bad.yaml: model.layers.up: weight shape"),
    "bad_metrics": (lambda d: d.update(metrics={"psnr": "high"}),
                    "bad.yaml: metrics: must map metric names to numbers"),
    "input_bits_out_of_range": (lambda d: d.update(input_bits=1),
                                r"bad.yaml: input_bits: bits must be 2..16 or 32, got 1"),
    "input_bits_wrong_type": (lambda d: d.update(input_bits="8"),
                              "bad.yaml: input_bits: bits must be an integer, got '8'"),
    "weights_elsewhere": (lambda d: d.update(weights="../secrets/weights.pt"),
                          "bad.yaml: weights: must name a file in the policy's own directory"),
    "weights_absolute": (lambda d: d.update(weights="/etc/weights.pt"),
                         "bad.yaml: weights: must name a file in the policy's own directory"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_each_bad_file_gets_one_line_naming_file_and_key(tmp_path, policy, kind):
    content, message = BAD[kind]
    path = _write(tmp_path, content if isinstance(content, str) else _mutate(policy, content))
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_policy_of_another_model_is_refused(tmp_path, policy, example_model):
    from mpqsearch.example import ExampleNet

    other = ExampleNet(channels=4)
    path = save_policy(policy, tmp_path / "p.yaml")
    with pytest.raises(PolicyError, match=r"p.yaml: layers.stem: policy of another model: weight shape \[8, 3, 3, 3\]"):
        load_policy(path, other)
    data = policy.to_dict()
    data["model"]["layers"]["extra"] = [1, 1]
    data["layers"]["extra"] = {"weight_bits": 8, "act_bits": 8}
    path = _write(tmp_path, data)
    with pytest.raises(PolicyError, match="layers.extra: policy of another model: the model has no such layer"):
        load_policy(path, example_model)


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="nope.yaml: cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_only_safe_yaml_is_loaded(tmp_path):
    path = _write(tmp_path, "!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(path)


def test_omitted_settings_take_defaults(tmp_path, policy):
    data = policy.to_dict()
    data["layers"]["up"] = {"weight_bits": 4, "act_bits": 6}
    assert load_policy(_write(tmp_path, data)).layers["up"] == LayerQuantConfig(4, 6)


def test_input_bits_round_trip_and_default(tmp_path, policy):
    assert policy.input_bits == 8 and policy.to_dict()["input_bits"] == 8
    policy.input_bits = 32
    path = save_policy(policy, tmp_path / "p.yaml")
    assert "input_bits: 32" in path.read_text()
    assert load_policy(path) == policy
    data = policy.to_dict()
    del data["input_bits"]  # a schema_version 1 file from before the key existed
    assert load_policy(_write(tmp_path, data)).input_bits == 8
    with pytest.raises(ValueError, match="got 0"):
        Policy(policy.layers, policy.fingerprint, input_bits=0)


def test_uniform_policies_take_the_search_spaces_base_settings(example_model, example_input):
    base = LayerQuantConfig(8, 8, scale="shift", granularity="per_tensor", weight_clipping="max", act_clipping="mse")
    space = SearchSpace.from_model(example_model, example_input, base=base)
    policy = Policy.uniform(space, 4, 6)
    assert set(policy.layers.values()) == {LayerQuantConfig(4, 6, "shift", "per_tensor", "max", "mse")}
    assert policy.layers == space.policy_from_params(dict.fromkeys(space.parameters(), 4) | {
        name: 6 for name in space.parameters() if name.endswith("/a")}).layers
    assert Policy.uniform(space, 4, 6, scale="product").layers["stem"].scale == "product"  # options win


def test_policies_record_their_target(example_model, tmp_path):
    from mpqsearch.quant.spec import default_target

    policy = Policy.uniform(layer_fingerprint(example_model), 8, 8)
    assert policy.target == default_target()
    policy.target = "portable"
    loaded = load_policy(save_policy(policy, tmp_path / "p.yaml"))
    assert loaded.target == "portable" and loaded.to_dict()["target"] == "portable"
    data = policy.to_dict() | {"target": "arm"}
    with pytest.raises(PolicyError, match="target: must be one of portable, vnni, got 'arm'"):
        Policy.from_dict(data, "p.yaml")
