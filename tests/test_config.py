"""Config loading: typed overrides, unknown keys and out-of-range values name the key, resolved config round-trips."""
import tomllib

import pytest

from vugan.pipeline.config import ConfigError, dumps_toml, fingerprint, load_config, write_resolved

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_presets_load_and_override_is_typed():
    cfg = load_config(ROOT / "configs" / "tiny.toml", ["trainer.batch_size=8"])
    assert cfg.trainer.batch_size == 8
    assert cfg.run.name == "tiny"
    load_config(ROOT / "configs" / "demo.toml")


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["trainer.batchsize=8"])
    assert "trainer.batchsize" in str(exc.value) and "batch_size" in str(exc.value)


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown section 'trainr'"):
        load_config(None, ["trainr.batch_size=8"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="trainer.batch_size: expected an integer"):
        load_config(None, ["trainer.batch_size=eight"])


def test_out_of_range_and_choices_name_allowed_values():
    with pytest.raises(ConfigError, match=r"trainer.batch_size: 0 is out of range; allowed values: 1 to"):
        load_config(None, ["trainer.batch_size=0"])
    with pytest.raises(ConfigError, match=r"preprocess.unit: 'disk' is not allowed; allowed values: 'disc', 'vertebra'"):
        load_config(None, ['preprocess.unit="disk"'])


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="split_fractions"):
        load_config(None, ["preprocess.split_fractions=[0.5, 0.5, 0.5]"])


def test_resolved_config_round_trips_with_same_fingerprint(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.toml", ["trainer.steps=3"])
    path = write_resolved(cfg, tmp_path)
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert fingerprint(again.to_dict()) == fingerprint(cfg.to_dict())
    assert tomllib.loads(dumps_toml(cfg.to_dict()))["trainer"]["steps"] == 3


def test_fingerprint_changes_with_values():
    a = load_config(None).trainer
    b = load_config(None, ["trainer.steps=7"]).trainer
    assert fingerprint(a) != fingerprint(b)


def test_salt_is_refused_from_config_and_command_line_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError, match="VUGAN_SALT or set preprocess.salt_file") as err:
        load_config(None, ['preprocess.salt="pepper-1234"'])
    assert "pepper-1234" not in str(err.value)
    toml = tmp_path / "c.toml"
    toml.write_text('[preprocess]\nsalt = "pepper-1234"\n')
    with pytest.raises(ConfigError, match="never taken from config") as err:
        load_config(toml)
    assert "pepper-1234" not in str(err.value)
    # A salt file is a path: the path is written, the salt is not in it.
    cfg = load_config(None, [f'preprocess.salt_file="{tmp_path / "salt.txt"}"'])
    assert "salt.txt" in write_resolved(cfg, tmp_path / "out").read_text()


@pytest.mark.parametrize("override", ["preprocess.margin=nan", "trainer.lr_g=nan", "trainer.lr_d=inf",
                                      "preprocess.intensity_percentiles=[nan, 99.0]", "preprocess.slice_spacing_mm=-inf"])
def test_non_finite_floats_are_refused_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=r"not a finite number") as err:
        load_config(None, [override])
    assert str(err.value).startswith(key)


def test_non_finite_float_in_a_toml_file_is_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[trainer]\nlr_g = nan\n")
    with pytest.raises(ConfigError, match=r"trainer.lr_g: nan is not a finite number"):
        load_config(toml)


def test_every_shipped_config_loads_and_validates():
    paths = sorted((ROOT / "configs").glob("*.toml"))
    assert {p.stem for p in paths} >= {"demo", "cohort", "tiny", "dataflow", "reference", "h200"}
    for path in paths:
        load_config(path)
    h200 = load_config(ROOT / "configs" / "h200.toml").trainer
    assert h200.mixed_precision and h200.xla is True and h200.batch_size >= 1024
