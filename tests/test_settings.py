"""Settings through pydantic-settings: ``PLACEMENT_*`` variables, ``./.env``, options on top, and the same
error messages as before (the variable named, what it accepts)."""

import pytest
from typer.testing import CliRunner

from placement.cli import app
from placement.serve.settings import Settings, SettingsError


def test_environment_then_dotenv_then_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"PLACEMENT_{name.upper()}", raising=False)
    (tmp_path / ".env").write_text("PLACEMENT_RAY_PROXY_PORT=8200\nPLACEMENT_PORT=8001\n"
                                   "PLACEMENT_URL=http://127.0.0.1:8001\nOTHER_TOOL=1\nPLACEMENT_TOKEN=\n")
    s = Settings.from_env()
    assert (s.ray_proxy_port, s.port, s.token) == (8200, 8001, None)  # PLACEMENT_URL (the client's) is not a setting
    monkeypatch.setenv("PLACEMENT_PORT", "8002")
    assert Settings.from_env().port == 8002  # the environment wins over .env
    assert Settings.from_env(port=8003).port == 8003  # an option wins over both
    assert Settings.from_env({}).ray_proxy_port == 8100  # an explicit mapping replaces environment and .env
    (tmp_path / ".env").write_text("PLACEMENT_SEED=-1\n")
    with pytest.raises(SettingsError, match="environment: PLACEMENT_SEED: Input should be greater than or equal to 0"):
        Settings.from_env()


def test_empty_optional_variables_mean_unset():
    s = Settings.from_env({"PLACEMENT_TOKEN": "", "PLACEMENT_DB_PATH": "", "PLACEMENT_MODEL_PATH": ""})
    assert (s.token, s.db_path, s.model_path) == (None, None, None)
    with pytest.raises(SettingsError, match="PLACEMENT_PORT"):
        Settings.from_env({"PLACEMENT_PORT": ""})


def test_replica_round_trip_keeps_every_value(tmp_path):
    s = Settings.from_env({"PLACEMENT_STATE_DIR": str(tmp_path), "PLACEMENT_EXPLORATION_RATE": "0.1"})
    again = Settings.from_mapping(s.for_replicas(), origin="user_config")
    assert again.model_dump() == s.model_dump()
    with pytest.raises(SettingsError, match="user_config: port: Input should be a valid integer"):
        Settings.from_mapping({"port": "x"}, origin="user_config")


def test_serve_help_lists_every_setting_with_its_default():
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in Settings.model_fields:
        assert f"PLACEMENT_{name.upper()} = " in text, name
    assert "PLACEMENT_PORT = 8000" in text and "PLACEMENT_EXPLORATION_RATE = 0.05" in text
