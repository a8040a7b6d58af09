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
