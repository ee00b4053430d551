"""Config loading: YAML files, dotted overrides, round trips, and one clear error per bad input."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from pixelis.core.config import ConfigError, PixelisConfig, config_hash, dump_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == PixelisConfig()
    assert cfg.reproducibility.seed == 42 and cfg.sft.learning_rate == 5e-4
    assert cfg.curriculum.smoothing_window_size == 3


def test_good_yaml_and_overrides(tmp_path):
    path = write(
        tmp_path,
        "sft:\n  learning_rate: 1.0e-3\n  max_steps: 10\nmodel:\n  lora:\n    enabled: true\n    r: 4\n",
    )
    cfg = load_config(
        path,
        [
            "sft.learning_rate=1e-5",  # YAML 1.1 reads this as a string; pydantic converts it
            "data.families=[count,track]",
            "model.path=null",
            "model.lora.rank_pattern={q_proj: 16}",
            "logging.level=debug",
        ],
    )
    assert cfg.sft.learning_rate == 1e-5 and cfg.sft.max_steps == 10
    assert cfg.model.lora.enabled and cfg.model.lora.r == 4 and cfg.model.lora.rank_pattern == {"q_proj": 16}
    assert cfg.data.families == ["count", "track"]
    assert cfg.model.path is None
    assert cfg.logging.level == "DEBUG"
    assert cfg.agent == PixelisConfig().agent  # untouched section keeps its defaults


def test_later_override_wins():
    assert load_config(None, ["sft.max_steps=5", "sft.max_steps=7"]).sft.max_steps == 7


def test_empty_file_and_empty_sections_give_defaults(tmp_path):
    assert load_config(write(tmp_path, "# only a comment\n")) == PixelisConfig()
    cfg = load_config(write(tmp_path, "sft:\n  # max_steps: 5\nmodel:\n  lora:\n"))
    assert cfg == PixelisConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_says_how_to_run(path):
    cfg = load_config(path)
    assert isinstance(cfg, PixelisConfig)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ")
    assert "pixelis " in path.read_text(encoding="utf-8")


def test_shipped_configs_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"default.yaml", "training_params.yaml", "sft_tiny.yaml"} <= names
    tp = load_config(CONFIGS / "training_params.yaml").curriculum
    assert (tp.smoothing_window_size, tp.patience_cycles, tp.cooldown_cycles) == (3, 2, 3)
    assert [s.name for s in tp.stages] == ["simple", "medium", "hard"]
    assert load_config(CONFIGS / "default.yaml") == PixelisConfig()


def test_dump_load_roundtrip_and_hash(tmp_path):
    cfg = load_config(CONFIGS / "training_params.yaml", ["sft.max_steps=3", "data.families=[count]"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(cfg) in (tmp_path / "resolved.yaml").read_text()


def test_config_hash_ignores_key_order_and_tracks_values(tmp_path):
    a = load_config(write(tmp_path, "sft:\n  max_steps: 9\n  batch_size: 2\nmodel:\n  size: xs\n", "a.yaml"))
    b = load_config(write(tmp_path, "model:\n  size: xs\nsft:\n  batch_size: 2\n  max_steps: 9\n", "b.yaml"))
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 64
    assert config_hash(a) != config_hash(load_config(None, ["sft.max_steps=9", "sft.batch_size=2"]))


def test_sections_validate_assignment():
    cfg = PixelisConfig()
    with pytest.raises(ValidationError):
        cfg.sft.learning_rate = "fast"


# ------------------------------------------------------------------------------------------ errors


def error_of(path=None, overrides=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


def test_unknown_key_names_file_line_key_and_suggestion(tmp_path):
    path = write(tmp_path, "# header\nsft:\n  max_steps: 10\n  lerning_rate: 0.1\n")
    err = error_of(path)
    assert str(err) == f"{path}:4: sft.lerning_rate: unknown key 'lerning_rate' (did you mean 'learning_rate'?)"
    assert (err.file, err.line, err.key) == (str(path), 4, "sft.lerning_rate")


def test_unknown_section_lists_known_ones(tmp_path):
    err = error_of(write(tmp_path, "sft:\n  max_steps: 1\nzzz:\n  a: 1\n"))
    assert err.line == 3 and err.key == "zzz"
    assert "unknown key 'zzz'" in str(err) and "reproducibility" in str(err)


def test_wrong_type_names_line_and_expected(tmp_path):
    path = write(tmp_path, "sft:\n  max_steps: 10\n\n  learning_rate: abc\n")
    err = error_of(path)
    assert str(err) == f"{path}:4: sft.learning_rate: expected a number, got 'abc'"


def test_first_problem_in_file_order_and_count(tmp_path):
    path = write(tmp_path, "sft:\n  max_steps: many\nmodel:\n  size: huge\n")
    err = error_of(path)
    assert err.line == 2 and err.key == "sft.max_steps"
    assert "expected an integer, got 'many'" in str(err) and "(and 1 more problem)" in str(err)


def test_literal_and_range_errors(tmp_path):
    err = error_of(write(tmp_path, "logging:\n  format: xml\n"))
    assert err.line == 2 and "expected one of 'text', 'color' or 'json', got 'xml'" in str(err)
    err = error_of(write(tmp_path, "tracing:\n  sample_ratio: 1.5\n"))
    assert err.key == "tracing.sample_ratio" and "less than or equal to 1" in str(err)


def test_nested_curriculum_error_points_into_list(tmp_path):
    path = write(
        tmp_path,
        "curriculum:\n  stages:\n    - name: a\n    - name: b\n      mixtur: {simple: 1}\n",
    )
    err = error_of(path)
    assert err.key == "curriculum.stages[1].mixtur" and err.line == 5
    assert "did you mean 'mixture'" in str(err)


def test_missing_file():
    err = error_of("/nonexistent/run.yaml")
    assert str(err) == "config file /nonexistent/run.yaml: not found"


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, "sft:\n  max_steps: 10\n  batch_size: [1, 2\n")
    err = error_of(path)
    assert str(err).startswith(f"{path}:")
    assert "malformed YAML" in str(err)
    assert err.line is not None and err.line >= 3


def test_not_utf8(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"sft:\n  max_steps: \xff\xfe\n")
    err = error_of(path)
    assert str(err).startswith(f"config file {path}: not UTF-8 text")


def test_top_level_must_be_mapping(tmp_path):
    err = error_of(write(tmp_path, "- sft\n- model\n"))
    assert "top level must be a mapping" in str(err) and "got a list" in str(err) and err.line == 1


def test_duplicate_key_is_an_error(tmp_path):
    err = error_of(write(tmp_path, "sft:\n  max_steps: 1\n  max_steps: 2\n"))
    assert err.line == 3 and err.key == "sft.max_steps" and "duplicate key" in str(err)


def test_override_without_equals():
    assert str(error_of(None, ["sft.max_steps"])) == (
        "override 'sft.max_steps': expected KEY=VALUE, e.g. sft.learning_rate=1e-5"
    )


def test_override_unknown_key_names_the_override(tmp_path):
    path = write(tmp_path, "sft:\n  max_steps: 3\n")
    err = error_of(path, ["sft.lerning_rate=1e-5"])
    assert str(err) == (
        "override 'sft.lerning_rate=1e-5': sft.lerning_rate: unknown key 'lerning_rate' (did you mean 'learning_rate'?)"
    )


def test_override_wrong_type_and_into_a_value():
    assert "override 'sft.batch_size=big': sft.batch_size: expected an integer, got 'big'" == str(
        error_of(None, ["sft.batch_size=big"])
    )
    err = error_of(None, ["sft.max_steps=3", "sft.max_steps.x=1"])
    assert "'sft.max_steps' is a value (3), not a section" in str(err)


@pytest.mark.parametrize("override", ["sft.learning_rate=inf", "sft.learning_rate=.nan", "tools.max_zoom=-.inf",
                                      "agent.wall_time_s=.inf"])
def test_config_floats_must_be_finite(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: input should be a finite number") as info:
        load_config(None, [override])
    assert info.value.key == key
