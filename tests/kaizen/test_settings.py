"""Settings: flags win over KAIZEN_* variables, which win over defaults; trainer knobs from the environment."""

from pathlib import Path

import pytest

from kaizen.errors import InputError
from kaizen.settings import (
    GateLimits,
    Settings,
    TrainConfig,
    build_settings,
    dataclass_from_env,
)


def test_flags_beat_environment_beat_defaults():
    env = {"KAIZEN_PORT": "9000", "KAIZEN_MEMORY": "off", "KAIZEN_DATA_DIR": "/tmp/x"}
    s = build_settings({"port": 9100, "host": None}, environ=env)
    assert (s.port, s.memory, s.data_dir, s.host) == (9100, False, Path("/tmp/x"), Settings().host)
    assert build_settings({}, environ={}).database_url.endswith("kaizen-data/kaizen.db")


@pytest.mark.parametrize("env", [{"KAIZEN_PORT": "eighty"}, {"KAIZEN_MEMORY": "maybe"}])
def test_bad_environment_values_are_clear_errors(env):
    with pytest.raises(InputError, match=list(env)[0]):
        build_settings({}, environ=env)


def test_trainer_knobs_and_gate_limits_from_the_environment():
    env = {"KAIZEN_TRAIN_LR0": "0.001", "KAIZEN_TRAIN_RANK": "4", "KAIZEN_TRAIN_TARGET_MODULES": "q_proj, v_proj",
           "KAIZEN_TRAIN_EARLY_STOP_EXACT": "false", "KAIZEN_GATE_MAX_DRIFT": "0.5"}
    cfg = dataclass_from_env(TrainConfig, env, "KAIZEN_TRAIN_")
    assert (cfg.lr0, cfg.rank, cfg.target_modules, cfg.early_stop_exact) == (0.001, 4, ("q_proj", "v_proj"), False)
    assert cfg.gamma == TrainConfig().gamma
    assert dataclass_from_env(GateLimits, env, "KAIZEN_GATE_").max_drift == 0.5
    with pytest.raises(InputError, match="KAIZEN_TRAIN_RANK"):
        dataclass_from_env(TrainConfig, {"KAIZEN_TRAIN_RANK": "big"}, "KAIZEN_TRAIN_")
