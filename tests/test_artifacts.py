"""artifact.json: lineage, fingerprints that follow the payload, and clear errors for unfinished folders."""
import json

import pytest

from vugan.pipeline.artifacts import ArtifactError, ArtifactType, payload_fingerprint, read_artifact, write_artifact


def _make(folder, text="a", **kw):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payload.txt").write_text(text)
    return write_artifact(folder, artifact_type=kw.pop("artifact_type", ArtifactType.EXAMPLES), producer="test",
                          config_fingerprint="cfg", **kw)


def test_manifest_fields_and_lineage(tmp_path):
    up = _make(tmp_path / "up", counts={"n": 3})
    down = _make(tmp_path / "down", artifact_type=ArtifactType.MODEL, inputs={"examples": tmp_path / "up"})
    assert {"type", "schema_version", "producer", "config_fingerprint", "inputs", "counts", "fingerprint",
            "created_at"} <= set(up)
    assert down["inputs"]["examples"]["fingerprint"] == up["fingerprint"]
    assert down["inputs"]["examples"]["type"] == "Examples"
    assert json.loads((tmp_path / "down" / "artifact.json").read_text())["type"] == "Model"


def test_fingerprint_follows_payload_not_manifest(tmp_path):
    a = _make(tmp_path / "a", "same")
    b = _make(tmp_path / "b", "same")
    c = _make(tmp_path / "c", "different")
    assert a["fingerprint"] == b["fingerprint"] != c["fingerprint"]
    (tmp_path / "a" / "logs").mkdir()
    (tmp_path / "a" / "logs" / "event").write_text("x")
    assert payload_fingerprint(tmp_path / "a", skip_dirs=("logs",)) == a["fingerprint"]
    assert payload_fingerprint(tmp_path / "a") != a["fingerprint"]


def test_unfinished_or_wrong_type_folder_is_a_clear_error(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ArtifactError, match="no artifact.json"):
        read_artifact(tmp_path / "half")
    _make(tmp_path / "ok")
    with pytest.raises(ArtifactError, match="field 'type' is 'Examples', expected 'Model'"):
        read_artifact(tmp_path / "ok", ArtifactType.MODEL)
