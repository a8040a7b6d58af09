import json

import pytest
import yaml

from mpqsearch.files import read_yaml, write_atomic


def test_files_are_written_atomically(tmp_path):
    path = tmp_path / "table.json"
    write_atomic(path, lambda handle: json.dump({"layers": {"a": 1}}, handle))

    def broken_dump(handle):
        handle.write('{"layers": {"a"')  # half a file, then the process dies
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, broken_dump)
    assert json.loads(path.read_text()) == {"layers": {"a": 1}}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]
    assert path.stat().st_mode & 0o777 == 0o600  # written files are their user's only


def test_a_key_written_twice_is_refused_naming_the_file_and_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("a: 1\nb:\n  c: 2\n  c: 3\n")
    with pytest.raises(ValueError, match=r"twice.yaml: not valid YAML at line 4: key 'c' appears twice"):
        read_yaml(path, ValueError)
    path.write_text(yaml.safe_dump({"a": [1, {"b": 2}]}))
    assert read_yaml(path, ValueError) == {"a": [1, {"b": 2}]}
