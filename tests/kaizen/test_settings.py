"""Settings: flags win over KAIZEN_* variables, which win over defaults; ranges are checked; README is generated."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import launch
from kaizen.errors import InputError
from kaizen.settings import (
    ALL,
    README,
    REGENERATE,
    GateLimits,
    Settings,
    TrainConfig,
    flag_help,
    load_gate_limits,
    load_settings,
    load_train_config,
    readme_section,
    settings_markdown,
    write_readme,
)


def test_flags_beat_environment_beat_defaults():
    env = {"KAIZEN_PORT": "9000", "KAIZEN_MEMORY": "off", "KAIZEN_DATA_DIR": "/tmp/x"}
    s = load_settings({"port": "9100", "host": None}, env)
    assert (s.port, s.memory, s.data_dir, s.host) == (9100, False, Path("/tmp/x"), "127.0.0.1")
    assert load_settings(None, {}).database_url.endswith("kaizen-data/kaizen.db")


def test_command_line_flags_beat_the_environment():
    env = {"KAIZEN_PORT": "9000", "KAIZEN_HOST": "0.0.0.0", "KAIZEN_SCHEDULE": "true", "KAIZEN_MEMORY": "false"}
    args = launch.parser().parse_args(["serve", "--port", "9100", "--no-schedule"])
    s = launch.settings_from_args(args, env)
    assert (s.port, s.host, s.schedule) == (9100, "0.0.0.0", False)
    args = launch.parser().parse_args(["ask", "hi", "--memory"])
    assert launch.settings_from_args(args, env).memory is True


def test_each_prefix_reads_only_its_own_variables():
    env = {"KAIZEN_TRAIN_RANK": "4", "KAIZEN_GATE_MIN_LOCALITY": "0.5",
           "KAIZEN_MIN_LOCALITY": "0.1", "KAIZEN_RANK": "2",
           "KAIZEN_GATE_PORT": "1", "KAIZEN_TRAIN_PORT": "2"}
    cfg, limits = launch.training_knobs(env)
    assert (cfg.rank, cfg.gamma) == (4, TrainConfig().gamma)
    assert (limits.min_locality, limits.max_leak) == (0.5, GateLimits().max_leak)
    assert load_settings(None, env).port == 7860


def test_no_two_settings_share_a_variable():
    names = [cls.env_var(name) for cls in ALL for name in cls.model_fields]
    assert len(names) == len(set(names))


def load_all(env: dict[str, str]) -> None:
    """Load all three from `env` (each class reads only its own prefix)."""
    load_settings(None, env)
    launch.training_knobs(env)


@pytest.mark.parametrize(("env", "message"), [
    ({"KAIZEN_MAX_QUEUE": "0"}, "KAIZEN_MAX_QUEUE must be an integer >= 1, not '0'"),
    ({"KAIZEN_PORT": "65536"}, "KAIZEN_PORT must be an integer from 1 to 65535, not '65536'"),
    ({"KAIZEN_PORT": "eighty"}, "KAIZEN_PORT must be an integer from 1 to 65535, not 'eighty'"),
    ({"KAIZEN_MAX_NEW_TOKENS": "0"}, "KAIZEN_MAX_NEW_TOKENS must be an integer >= 1"),
    ({"KAIZEN_TEMPERATURE": "-0.1"}, "KAIZEN_TEMPERATURE must be a number >= 0"),
    ({"KAIZEN_TOP_P": "0"}, "KAIZEN_TOP_P must be a number > 0 and <= 1"),
    ({"KAIZEN_DTYPE": "int8"}, "KAIZEN_DTYPE must be one of bfloat16, float32, float16"),
    ({"KAIZEN_SCHEDULE_MINUTES": "0"}, "KAIZEN_SCHEDULE_MINUTES must be an integer from 1 to 10080"),
    ({"KAIZEN_CONTEXT_TOKENS": "256", "KAIZEN_MAX_NEW_TOKENS": "256"},
     "KAIZEN_CONTEXT_TOKENS (256) must be larger than KAIZEN_MAX_NEW_TOKENS (256)"),
    ({"KAIZEN_TRAIN_LR0": "0"}, "KAIZEN_TRAIN_LR0 must be a number > 0 and <= 1, not '0'"),
    ({"KAIZEN_TRAIN_RANK": "big"}, "KAIZEN_TRAIN_RANK must be an integer >= 1, not 'big'"),
    ({"KAIZEN_TRAIN_CHECK_EVERY": "0"}, "KAIZEN_TRAIN_CHECK_EVERY must be an integer >= 1"),
    ({"KAIZEN_TRAIN_DROPOUT": "1"}, "KAIZEN_TRAIN_DROPOUT must be a number >= 0 and < 1"),
    ({"KAIZEN_GATE_MIN_LOCALITY": "1.5"}, "KAIZEN_GATE_MIN_LOCALITY must be a number from 0 to 1"),
])
def test_out_of_range_values_name_the_variable_and_the_range(env, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load_all(env)


def test_the_command_line_reports_a_bad_setting_and_exits_2(monkeypatch, capsys, tmp_path):
    for name in ("HF_HUB_OFFLINE", "OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM"):  # main() sets these defaults
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    monkeypatch.setenv("KAIZEN_MAX_QUEUE", "0")  # today every reply would be a 503
    assert launch.main(["adapters", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "kaizen: KAIZEN_MAX_QUEUE must be an integer >= 1, not '0'\n"
    monkeypatch.delenv("KAIZEN_MAX_QUEUE")
    assert launch.main(["serve", "--data-dir", str(tmp_path), "--port", "0"]) == 2
    assert capsys.readouterr().err == "kaizen: --port must be an integer from 1 to 65535, not '0'\n"
    assert not (tmp_path / "kaizen.db").exists()


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
                                            ("false", False), ("0", False), ("no", False), ("off", False)])
def test_true_false_variables(raw, value):
    assert load_settings(None, {"KAIZEN_AUTO_APPROVE": raw}).auto_approve is value
    assert load_train_config({"KAIZEN_TRAIN_EARLY_STOP_EXACT": raw}).early_stop_exact is value


def test_a_true_false_variable_refuses_anything_else():
    with pytest.raises(InputError, match="KAIZEN_MEMORY must be true or false, not 'maybe'"):
        load_settings(None, {"KAIZEN_MEMORY": "maybe"})


def test_an_empty_variable_counts_as_unset():
    s = load_settings(None, {"KAIZEN_PORT": "", "KAIZEN_MEMORY": "", "KAIZEN_DATA_DIR": ""})
    assert (s.port, s.memory, s.data_dir) == (7860, True, Path("kaizen-data"))


def test_target_modules_take_a_comma_separated_list():
    cfg = load_train_config({"KAIZEN_TRAIN_TARGET_MODULES": " q_proj, v_proj,"})
    assert cfg.target_modules == ("q_proj", "v_proj")
    assert TrainConfig(target_modules=("up_proj",)).target_modules == ("up_proj",)
    with pytest.raises(InputError, match="KAIZEN_TRAIN_TARGET_MODULES must be one or more comma-separated names"):
        load_train_config({"KAIZEN_TRAIN_TARGET_MODULES": " , "})


def test_direct_construction_does_not_read_the_environment(monkeypatch):
    monkeypatch.setenv("KAIZEN_PORT", "9000")
    monkeypatch.setenv("KAIZEN_TRAIN_RANK", "2")
    monkeypatch.setenv("KAIZEN_GATE_MIN_LOCALITY", "0.1")
    assert (Settings().port, Settings(memory=False).port, TrainConfig().rank, GateLimits().min_locality) == (
        7860, 7860, 8, 0.95)
    # ... while the loaders do read them (so the line above is not true for some other reason)
    assert (load_settings(None, os.environ).port, load_train_config(os.environ).rank,
            load_gate_limits(os.environ).min_locality) == (9000, 2, 0.1)


def test_settings_are_immutable_and_replace_validates():
    s = Settings(port=9000)
    assert s.replace(port=9001).port == 9001
    assert s.port == 9000
    with pytest.raises(ValidationError):
        s.port = 1
    with pytest.raises(ValidationError):
        s.replace(max_queue=0)
    with pytest.raises(ValidationError):
        Settings(max_qeue=4)  # a misspelt keyword is an error, not silently ignored
    assert TrainConfig().replace(rank=2).rank == 2
    assert GateLimits().replace(max_leak=0.5).max_leak == 0.5


@pytest.mark.parametrize(("command", "flags"), [
    ("serve", ("data_dir", "model", "db_url", "host", "port", "schedule", "role")),
    ("ask", ("data_dir", "model", "db_url", "memory")),
    ("train", ("data_dir", "model", "db_url")),
])
def test_settings_flags_take_their_help_from_the_field_descriptions(command, flags, capsys):
    with pytest.raises(SystemExit):
        launch.parser().parse_args([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name in flags:
        assert f"{Settings.model_fields[name].description} [{Settings.env_var(name)}" in shown
        assert " ".join(flag_help(name).split()) in shown


def test_every_field_is_described():
    for cls in ALL:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} needs a description (it is the README and --help text)"


def test_readme_settings_tables_are_up_to_date():
    assert readme_section(README.read_text(encoding="utf-8")) == settings_markdown(), (
        f"The README's settings tables are stale; regenerate them with `{REGENERATE}`.")


def test_regenerating_a_stale_readme_section(tmp_path):
    stale = README.read_text(encoding="utf-8").replace("KAIZEN_MAX_QUEUE", "KAIZEN_MAX_QUEUE_OLD")
    path = tmp_path / "README.md"
    path.write_text(stale, encoding="utf-8")
    assert readme_section(stale) != settings_markdown()
    assert write_readme(path) is True
    assert path.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")
    assert write_readme(path) is False
