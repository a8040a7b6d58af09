import pytest
import yaml

from mpqsearch.experiments.config import ConfigError, load_config, parse_duration

GOOD = {
    "name": "demo",
    "workload": "example",
    "driver": "nni",
    "search_space": {"weight_bits": [4, 8], "act_bits": [8], "exclude": ["head"],
                     "overrides": {"stem": {"weight_bits": [8]}}, "scale": "shift"},
    "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "size_ratio", "direction": "minimize"}],
    "constraints": [{"metric": "size_ratio", "max": 0.5}],
    "tuner": {"name": "TPE", "args": {"seed": 1}},
    "sampler": "NSGAII",
    "strategies": {"seed": [{"name": "uniform", "args": {"bits": [[8, 8]]}}]},
    "budget": {"max_trials": 5, "max_duration": "10m", "concurrency": 2},
    "latency": {"backend": "none"},
    "port": 8123,
}


def _write(tmp_path, data):
    path = tmp_path / "exp.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_good_file_round_trips(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.search_space.overrides == {"stem": {"weight_bits": [8]}}
    assert config.constraints[0].violation(0.6) == pytest.approx(0.1)
    assert config.constraints[0].violation(0.4) == pytest.approx(-0.1)
    assert config.budget.max_seconds == 600 and config.sampler.name == "NSGAII"
    again = load_config(_write(tmp_path, config.to_dict()))
    assert again.to_dict() == config.to_dict()


def _with(path_key, value):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    target = data
    keys = path_key.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


BAD = [
    (_with("budgt", 1), "budgt: unknown key"),
    (_with("workload", KeyError), "workload: missing"),
    (_with("driver", "ray"), "driver: must be one of nni, optuna, got 'ray'"),
    (_with("search_space.weight_bits", [1, 4]), r"search_space.weight_bits\[0\]: bits must be 2..16 or 32, got 1"),
    (_with("search_space.act_bits", "8"), "search_space.act_bits: must be a non-empty list"),
    (_with("search_space.scale", "log"), "search_space.scale: must be one of product, shift"),
    (_with("search_space.overrides", {"stem": {"bits": [8]}}), "search_space.overrides.stem.bits: unknown key"),
    (_with("objectives", [{"metric": "top1", "direction": "up"}]),
     r"objectives\[0\].direction: must be one of maximize"),
    (_with("constraints", [{"metric": "size_ratio"}]), r"constraints\[0\]: needs max or min"),
    (_with("constraints", [{"metric": "size_ratio", "max": "small"}]), r"constraints\[0\].max: must be a number"),
    (_with("budget.max_trials", 0), "budget.max_trials: must be a positive integer, got 0"),
    (_with("budget.max_trials", True), "budget.max_trials: must be a positive integer, got True"),
    (_with("budget.max_duration", "soon"), "budget.max_duration: expected a duration"),
    (_with("port", 70000), "port: must be at most 65535"),
    (_with("latency.target", "arm"), "latency.target: must be one of portable, vnni, got 'arm'"),
    (_with("strategies.seed", "uniform"), "strategies.seed: must be a list"),
    ("workload: [unclosed", r"not valid YAML at line 1"),
    ("- a\n- b\n", "an experiment file must be a YAML mapping"),
]


@pytest.mark.parametrize("data,message", BAD)
def test_each_mistake_is_one_line_naming_file_and_key(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_durations():
    assert parse_duration("90") == 90 and parse_duration("2h") == 7200 and parse_duration("1.5m") == 90
    with pytest.raises(ValueError):
        parse_duration("2 weeks")
