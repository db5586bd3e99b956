"""Service settings (pydantic-settings), read from ``PLACEMENT_*`` environment variables, a ``.env``
file in the working directory, or a Serve config's ``args``.

Every field below is the environment variable ``PLACEMENT_<FIELD>`` in upper case, e.g.
``PLACEMENT_PORT=8000``, ``PLACEMENT_EXPLORATION_RATE=0.05``,
``PLACEMENT_DB_PATH=/var/lib/placement/placement.db``; the same lines may sit in ``./.env``
(the environment wins over ``.env``; command-line options win over both). A Serve config YAML
(``serve/config.yaml``) passes the same names as ``args`` of :func:`placement.serve.app.app_builder`.

Units are in the names (``_s`` seconds, ``_bytes``, ``_mib``); thresholds are paper A's
``T_t`` (``speedup_min``) and ``T_e`` (``energy_ratio_max``). A bad value raises
:class:`SettingsError` naming the variable and what it accepts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from placement.core.threshold import MissingPower, Thresholds

ENV_PREFIX = "PLACEMENT_"
ENV_FILE = ".env"
"""Read from the working directory when present; the process environment wins over it."""
EMPTY_IS_UNSET = ("token", "db_path", "model_path", "db_url", "token_file", "client_tokens_file")
"""Optional settings where an empty variable (``PLACEMENT_TOKEN=``) means "not set"."""
MAX_EXPLORATION_RATE = 0.2
"""Hard upper bound on the exploration rate: at most one decision in five may explore."""
MAX_EXPLORE_BAND = 0.45
"""Upper bound of ``explore_band``, a setting kept for configuration compatibility: exploration is
gated by the estimate's uncertainty (:data:`placement.serve.placer.EXPLORE_Z`), not by a band of P(GPU)."""


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the fix."""


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/placement`` (``~/.local/share/placement``): the database and policy versions."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "placement"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (a bind that needs no token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("placement_settings_environ", default=None)
"""An explicit environment for :meth:`Settings.from_env` (``None``: ``os.environ`` and ``.env``)."""


def _settings_vars(env: Mapping[str, str | None], fields: Mapping[str, Any]) -> dict[str, str | None]:
    """The ``PLACEMENT_<field>`` entries of ``env`` (lower-cased names); other variables, such as
    ``PLACEMENT_URL`` of the client, are not settings and stay out; an empty optional one is unset."""
    prefix = ENV_PREFIX.lower()
    found: dict[str, str | None] = {}
    for key, value in env.items():
        name = key.lower()
        field = name[len(prefix):] if name.startswith(prefix) else None
        if field in fields and not (not value and field in EMPTY_IS_UNSET):
            found[name] = value
    return found


class _PlacementEnv(EnvSettingsSource):
    """``PLACEMENT_*`` settings from ``os.environ`` or an explicit mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return _settings_vars(os.environ if self._environ is None else self._environ, self.settings_cls.model_fields)


class _PlacementDotEnv(DotEnvSettingsSource):
    """``PLACEMENT_*`` settings from ``./.env``; its other lines are left to whoever reads them."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return _settings_vars(super()._load_env_vars(), self.settings_cls.model_fields)


def read_token_file(path: Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped). The file must belong to
    this user and be readable by no one else (mode 0600 or 0400); raises :class:`SettingsError`
    naming the file and the fix (never the token)."""
    try:
        st = os.stat(path)
        if st.st_uid != os.geteuid():
            raise SettingsError(f"PLACEMENT_TOKEN_FILE {path}: owned by uid {st.st_uid}, not the service user "
                                f"({os.geteuid()}): chown it")
        if st.st_mode & 0o077:
            raise SettingsError(f"PLACEMENT_TOKEN_FILE {path}: mode {st.st_mode & 0o777:o} lets others read it: "
                                f"chmod 600 {path}")
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"PLACEMENT_TOKEN_FILE {path}: cannot be read ({exc.strerror})") from None
    if len(token) < 16:
        raise SettingsError(f"PLACEMENT_TOKEN_FILE {path}: the token must have at least 16 characters")
    return token


CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A client's name in ``client_tokens_file``: what feedback is attributed to (letters, digits, ``_.-``)."""
SERVICE_CLIENT = "service"
"""The client feedback is attributed to when it carries the service's own token."""


def read_client_tokens(path: Path) -> dict[str, str]:
    """The per-client feedback tokens in ``path`` as ``{sha256 of the token: client name}``: one
    ``<name> <token>`` per line, blank lines and ``#`` comments ignored. Same ownership and mode
    rules as :func:`read_token_file`; raises :class:`SettingsError` naming the file, the line and
    the fix (never a token)."""
    where = f"PLACEMENT_CLIENT_TOKENS_FILE {path}"
    try:
        st = os.stat(path)
        if st.st_uid != os.geteuid():
            raise SettingsError(f"{where}: owned by uid {st.st_uid}, not the service user ({os.geteuid()}): chown it")
        if st.st_mode & 0o077:
            raise SettingsError(f"{where}: mode {st.st_mode & 0o777:o} lets others read it: chmod 600 {path}")
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"{where}: cannot be read ({exc.strerror})") from None
    out: dict[str, str] = {}
    names: set[str] = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise SettingsError(f"{where} line {number}: expected '<client name> <token>'")
        name, token = parts
        if not CLIENT_NAME.match(name) or name == SERVICE_CLIENT:
            raise SettingsError(f"{where} line {number}: client name must be 1-64 letters, digits or '_.-' "
                                f"(not '{SERVICE_CLIENT}', the service token's)")
        if len(token) < 16:
            raise SettingsError(f"{where} line {number}: the token of '{name}' must have at least 16 characters")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if name in names or digest in out:
            raise SettingsError(f"{where} line {number}: client '{name}' or its token appears twice")
        names.add(name)
        out[digest] = name
    return out


class Settings(BaseSettings):
    """All service settings. See the module docstring for how they are set."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=True, env_prefix=ENV_PREFIX,
                                      env_file=ENV_FILE, env_file_encoding="utf-8", case_sensitive=False)

    # --- network ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", min_length=1, description="Bind address. Non-loopback needs a token.")
    port: int = Field(8000, ge=1, le=65535, description="The service's HTTP port (the ingress replica's direct port).")
    ray_proxy_port: int = Field(8100, ge=1, le=65535, description="Ray Serve's own HTTP proxy port (fallback path).")
    haproxy: bool = Field(True, description="Ray Serve's HAProxy ingress on `port` in front of the direct-ingress "
                          "replicas (their ports internal, from port+1); false: the first replica itself on `port`.")
    token: str | None = Field(None, min_length=16, description="Bearer token for feedback and policy routes.")
    token_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$",
                                     description="sha256 of the token: what replicas get instead of the token.")
    max_body_bytes: int = Field(64 * 2**20, ge=1024, le=2**31, description="Largest request body accepted.")
    max_batch_jobs: int = Field(100_000, ge=1, le=1_000_000, description="Most jobs in one placement request.")

    # --- state -------------------------------------------------------------------------
    state_dir: Path = Field(default_factory=default_state_dir, description="Policy versions live under it.")
    db_path: Path | None = Field(None, description="SQLite database (default: <state_dir>/placement.db).")
    db_synchronous: str = Field("normal", pattern="^(normal|full)$",
                                description="SQLite synchronous mode under WAL: normal survives process "
                                "crashes; full also survives power loss (slower).")
    decision_writes: str = Field("commit", pattern="^(commit|behind)$",
                                 description="commit: a placement's decisions are committed before its answer; "
                                 "behind: answered first, committed a moment later by one writer thread in group "
                                 "commits (lower latency; a replica killed in between loses those decisions, and "
                                 "feedback quoting one is refused). Feedback is committed before its answer either way.")
    max_pending_decisions: int = Field(100_000, ge=1, le=100_000_000,
                                       description="decision_writes=behind: decisions queued for the store at most; "
                                       "past it placements answer 503 until the writer catches up.")
    decision_wait_s: float = Field(0.5, ge=0, le=60, allow_inf_nan=False,
                                   description="decision_writes=behind: how long a feedback waits for its decision "
                                   "to be stored (by another replica's writer) before it is refused as unknown.")
    model_path: Path | None = Field(None, description="Initial model directory (default: the bundled models/default).")
    db_url: str | None = Field(None, pattern=r"^[a-z0-9+]+://", description="SQLAlchemy URL of a shared database for "
                               "clusters, e.g. postgresql+psycopg://placement:secret@db-host:5432/placement; when set "
                               "it replaces the SQLite file (db_path).")

    # --- decisions -----------------------------------------------------------------------
    speedup_min: float = Field(2.0, gt=0, le=1e6, allow_inf_nan=False, description="T_t (paper A).")
    energy_ratio_max: float = Field(1.5, gt=0, le=1e6, allow_inf_nan=False, description="T_e (paper A).")
    missing_power: MissingPower = MissingPower.SPEED_ONLY
    exploration_rate: float = Field(0.05, ge=0.0, le=MAX_EXPLORATION_RATE, allow_inf_nan=False)
    explore_band: float = Field(0.3, ge=0.0, le=MAX_EXPLORE_BAND, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Exploration and learner seed.")
    policy_poll_s: float = Field(2.0, gt=0, le=3600, allow_inf_nan=False,
                                 description="How often placer replicas look for a newly promoted version.")
    torch_threads: int = Field(1, ge=1, le=256)

    # --- learner -------------------------------------------------------------------------
    learner_enabled: bool = True
    learn_interval_s: float = Field(60.0, gt=0, le=86_400, allow_inf_nan=False)
    min_feedback_per_update: int = Field(8, ge=1, le=10_000_000, description="New feedback rows that trigger an update.")
    holdout_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    min_holdout: int = Field(3, ge=1, description="Held-out rows an update needs before its gate can promote.")
    history_window: int = Field(5000, ge=10, le=10_000_000, description="Most recent feedback rows a learner update uses.")
    ppo_timesteps: int = Field(4096, ge=64, le=10_000_000)
    gate_tolerance: float = Field(0.0, ge=0.0, le=10.0,
                                  description="The gate promotes a candidate whose lower bound of held-out reward is "
                                              "at most this much below the serving policy's estimate (0: it must "
                                              "reach it); the estimated gain must still be positive.")
    gate_confidence: float = Field(0.9, gt=0.0, lt=1.0, description="Two-sided confidence of the off-policy gate's interval (its lower end is the bound).")
    pinned_gate_confidence: float = Field(0.99, gt=0.0, lt=1.0, description="The gate's confidence while an operator's rollback pins the serving version.")
    recency_half_life: int = Field(64, ge=1, le=10_000_000, description="Feedback rows (of those an update uses) after which a row's weight in training and in the gate halves (the policy follows drift).")
    max_signature_share: float = Field(0.25, gt=0.0, le=1.0, description="Largest share of an update's training weight one architecture signature may carry.")
    max_client_share: float = Field(0.5, gt=0.0, le=1.0, description="Largest share of an update's training weight the "
                                    "feedback of one client (its token, client_tokens_file) may carry, once two or more "
                                    "clients reported.")

    # --- Ray resources (fractional CPUs so it runs on 2 cores) ---------------------------
    ingress_replicas: int = Field(1, ge=1, le=256)
    ingress_num_cpus: float = Field(0.25, gt=0, le=64)
    learner_num_cpus: float = Field(0.5, gt=0, le=64)
    max_ongoing_requests: int = Field(64, ge=1, le=100_000)

    # --- hostile clients (placement.serve.guard): limits applied before any parsing ------------------
    header_timeout_s: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False,
                                    description="A connection's request headers must arrive within this time.")
    body_timeout_s: float = Field(15.0, gt=0, le=3600, allow_inf_nan=False,
                                  description="A request body must arrive whole within this time (else 408).")
    max_body_reads_per_client: int = Field(8, ge=1, le=100_000,
                                           description="Request bodies one client address may be sending at once (429).")
    max_body_reads: int = Field(4096, ge=1, le=1_000_000, description="Request bodies being received at once, all clients (503).")
    allowed_origins: str = Field("", max_length=10_000,
                                 description="Comma-separated browser origins (https://host:port) allowed to call "
                                 "mutating routes besides the service's own; any other Origin gets 403.")
    placements_per_client_per_s: float = Field(0.0, ge=0, le=1e6, allow_inf_nan=False,
                                               description="Placement requests per second per client address "
                                               "(token bucket; 0: no limit).")
    placement_burst: int = Field(20, ge=1, le=1_000_000, description="Placement requests a client may send at once "
                                 "before placements_per_client_per_s applies.")
    token_file: Path | None = Field(None, description="File holding the bearer token (mode 0600, owned by the service "
                                    "user): replicas read it; the token never enters their environment.")
    client_tokens_file: Path | None = Field(
        None, description="File of per-client feedback tokens, one '<client name> <token>' per line (mode 0600, owned "
                          "by the service user; replicas read it). Feedback carrying one is attributed to that client "
                          "(the service token's to 'service'); a learner update takes at most max_client_share of its "
                          "weight from one client. Client tokens open the feedback routes only, never the policy ones.")

    # --- retention of decisions that got no feedback ---------------------------------------
    retention_s: float = Field(30 * 86_400.0, gt=0, le=10 * 365 * 86_400.0, allow_inf_nan=False,
                               description="Decisions without feedback older than this are deleted.")
    retention_rows: int = Field(10_000_000, ge=1000, le=10**10,
                                description="At most this many decisions without feedback are kept (oldest deleted first).")
    retention_interval_s: float = Field(600.0, gt=0, le=86_400, allow_inf_nan=False,
                                        description="How often a replica enforces the retention window.")

    @model_validator(mode="after")
    def _secure_bind(self) -> Settings:
        if self.token_file is not None:
            read_token_file(self.token_file)  # raises naming the file and the fix
        if self.client_tokens_file is not None:
            clients = read_client_tokens(self.client_tokens_file)  # raises naming the file, the line and the fix
            if self.token_digest is None:
                raise ValueError("client_tokens_file needs the service's own token (PLACEMENT_TOKEN or "
                                 "PLACEMENT_TOKEN_FILE): client tokens open the feedback routes only")
            if self.token_digest in clients:
                raise ValueError("client_tokens_file: a client's token equals the service token; give each its own")
        if not is_loopback(self.host) and not (self.token or self.token_sha256 or self.token_file):
            raise ValueError(
                f"host '{self.host}' is not a loopback address: set PLACEMENT_TOKEN (>= 16 characters) so "
                "feedback and policy routes need a bearer token, or bind 127.0.0.1"
            )
        if self.port == self.ray_proxy_port:
            raise ValueError("port and ray_proxy_port must differ (the Ray proxy is the fallback path)")
        return self

    # --- derived ---------------------------------------------------------------------------
    @property
    def database(self) -> Path:
        """The SQLite database file: ``db_path``, else ``placement.db`` in ``state_dir``."""
        return self.db_path if self.db_path is not None else self.state_dir / "placement.db"

    @property
    def policies_dir(self) -> Path:
        """Where stored policy versions live: ``policies`` in ``state_dir``."""
        return self.state_dir / "policies"

    @property
    def thresholds(self) -> Thresholds:
        """The service's joint threshold (T_t, T_e and the missing-power rule)."""
        return Thresholds(self.speedup_min, self.energy_ratio_max, MissingPower(self.missing_power))

    @property
    def token_digest(self) -> str | None:
        """sha256 (hex) of the bearer token, or None when no token is configured."""
        if self.token:
            return hashlib.sha256(self.token.encode()).hexdigest()
        if self.token_file is not None:
            return hashlib.sha256(read_token_file(self.token_file).encode()).hexdigest()
        return self.token_sha256

    @property
    def client_tokens(self) -> dict[str, str]:
        """``{sha256 of a client token: client name}`` (read from ``client_tokens_file``; empty without one)."""
        return read_client_tokens(self.client_tokens_file) if self.client_tokens_file is not None else {}

    def for_replicas(self) -> dict[str, Any]:
        """Settings to hand to Ray deployments: JSON-safe, the token replaced by its sha256
        (the secret stays in the launching process; replicas compare digests)."""
        data = self.model_dump(mode="json")
        data["token_sha256"] = None if self.token_file is not None else self.token_digest  # replicas read the file
        data["token"] = None
        return data

    def public(self) -> dict[str, Any]:
        """Settings safe to show (the token is redacted)."""
        data = self.model_dump(mode="json")
        data["token"] = "set" if self.token_digest else None
        data["token_sha256"] = None
        if self.db_url:
            from sqlalchemy import make_url

            data["db_url"] = make_url(self.db_url).render_as_string(hide_password=True)
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Options (init) over ``PLACEMENT_*`` variables over ``./.env``; an explicit mapping given to
        :meth:`from_env` replaces both the environment and ``.env``."""
        environ = _ENVIRON.get()
        if environ is not None:
            return init_settings, _PlacementEnv(settings_cls, environ)
        return init_settings, _PlacementEnv(settings_cls), _PlacementDotEnv(settings_cls)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origin: str = "settings") -> Settings:
        """Validate ``values``; errors name the field (as ``origin`` spells it) and the fix."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            name = f"{ENV_PREFIX}{loc.upper()}" if origin == "environment" and loc else (loc or "settings")
            raise SettingsError(f"{origin}: {name}: {first['msg']}") from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PLACEMENT_*`` variables and ``./.env`` (or only ``environ`` when given), then
        ``overrides`` (e.g. CLI options, ``None`` meaning "not given") on top."""
        values = {k: v for k, v in overrides.items() if v is not None}
        try:
            with _environ(environ):
                return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            name = f"{ENV_PREFIX}{loc.upper()}" if loc else "settings"
            raise SettingsError(f"environment: {name}: {first['msg']}") from exc


@contextmanager
def _environ(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)
