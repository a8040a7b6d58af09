import json

from mpqsearch.cli import main


def test_layers_table(capsys):
    assert main(["layers", "mpqsearch.example:build", "--input-shape", "1,3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "block.depthwise  Conv2d/dw" in out and "ConvTranspose2d" in out and "tied0" in out
    assert "7 quantizable layers" in out


def test_layers_json(capsys):
    assert main(["layers", "mpqsearch.example:build", "--input-shape", "1,3,32,32", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in layers][:2] == ["stem", "block.conv"]
    assert layers[2]["depthwise"] is True and layers[0]["macs"] == 8 * 1024 * 27


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["layers", "mpqsearch.example:", "--input-shape", "1,3,32,32"]) == 2
    assert "expected MODULE:FUNCTION" in capsys.readouterr().err
    assert main(["layers", "mpqsearch.example:build"]) == 2
    assert "--input-shape is needed" in capsys.readouterr().err
    assert main(["layers", "no_such_module:f", "--input-shape", "1,3,32,32"]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err
    assert main(["layers", "mpqsearch.example:build", "--input-shape", "1,x"]) == 2
    assert "--input-shape '1,x'" in capsys.readouterr().err
    assert main(["train", "sr-espcn-clipfree-x2"]) == 2
    assert "reuses another's weights" in capsys.readouterr().err
    assert main(["train", "cls-digits", "--steps", "0"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err
    assert main(["evaluate", "example", "--uniform", "8/8", "--latency", "torch", "--target", "vnni"]) == 2
    assert "'torch' does not take the options ['target', 'threads']" in capsys.readouterr().err


def test_refine_writes_a_refined_policy_that_apply_reproduces(tmp_path, capsys):
    from mpqsearch.example import build
    from mpqsearch.policy import Policy, load_policy, save_policy
    from mpqsearch.quant.graph import layer_fingerprint

    source = save_policy(Policy.uniform(layer_fingerprint(build()), 3, 8), tmp_path / "w3a8.yaml")
    assert main(["refine", "example", "--policy", str(source), "--steps", "2", "--lr", "1e-3"]) == 0
    captured = capsys.readouterr()
    refined = tmp_path / "w3a8.refined.yaml"
    assert "refine: step 2/2" in captured.err and "top1" in captured.out and "loss" in captured.out
    assert f"wrote {refined} and {tmp_path / 'w3a8.refined.weights.pt'}" in captured.out
    policy = load_policy(refined)
    assert policy.provenance["workload"] == "example" and policy.provenance["refined"]["steps"] == 2
    assert main(["apply", str(refined), "--latency", "none"]) == 0
    assert "recorded metrics reproduce within noise" in capsys.readouterr().out

    assert main(["refine", "example", "--policy", str(refined), "--steps", "1", "-o", str(tmp_path / "r.yaml"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["before"]["metrics"] == {"top1": policy.metrics["top1"]}  # refined further from its weights
    assert report["after"]["metrics"]["top1"] == load_policy(tmp_path / "r.yaml").metrics["top1"]
    assert report["data"] == "distillation" and report["weights"] == str(tmp_path / "r.weights.pt")
    assert main(["refine", "example", "--policy", str(source), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_seed_writes_policies_that_match_its_table(tmp_path, capsys):
    from mpqsearch import load_policy

    args = ["seed", "example", "--strategy", "uniform", "--arg", "bits=[[8, 8], [4, 6]]"]
    assert main(args + ["--json", "-o", str(tmp_path), "--evaluate"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["strategy"] == "uniform" and len(report["seeds"]) == 2
    assert {tuple(bits) for row in report["layers"] for bits in row["bits"]} == {(8, 8), (4, 6)}
    second = load_policy(report["seeds"][1]["file"])
    assert second.provenance == {"strategy": "uniform", "workload": "example"}
    assert {(c.weight_bits, c.act_bits) for c in second.layers.values()} == {(4, 6)}
    assert second.metrics["top1"] == report["seeds"][1]["metrics"]["top1"] < 1.0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"seed 1: size {100 * report['seeds'][1]['size_ratio']:.2f} % of FP32" in out
    assert "stem             stem" in out and "8/8     4/6" in out
    assert main(["seed", "example", "--strategy", "uniform", "--arg", "bits"]) == 2
    assert "--arg 'bits': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["seed", "example", "--strategy", "uniform", "--arg", "bits=[[8]]"]) == 2
    assert "bits must be [weight_bits, act_bits] pairs" in capsys.readouterr().err


def test_evaluate_json_carries_everything_the_table_shows(capsys):
    args = ["evaluate", "sr-espcn-x2", "--uniform", "8/8", "--latency", "none"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for name, value in report["metrics"].items():
        row = next(line.split() for line in table.splitlines() if line.startswith(name + " "))
        assert row[1:] == [f"{value:.4f}", f"{report['reference'][name]:.4f}", f"{report['drops'][name]:+.4f}",
                           report["directions"][name], f"{report['baselines'][name]:.4f}"]  # bicubic's
    assert f"size     {report['size_bytes']} bytes" in table and set(report["timings"]) <= set(table.split())
