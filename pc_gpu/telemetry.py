"""Redis telemetry: the seed's one-hash record of a frame's zeropoint and sky."""

import logging
import math
import os
from dataclasses import dataclass

from .errors import TelemetryError, InputError

__all__ = ["RedisSettings", "telemetry_record", "send_telemetry", "TELEMETRY_FIELDS",
           "redis_settings", "connect"]

log = logging.getLogger(__name__)

TELEMETRY_FIELDS = (
    "timestamp", "zp_adu_per_s", "sky_adu_per_s", "mjd_obs", "n_stars_for_zp",
    "sky_adu_per_s_q1", "sky_adu_per_s_q2", "sky_adu_per_s_q3", "sky_adu_per_s_q4",
    "zp_adu_per_s_q1", "zp_adu_per_s_q2", "zp_adu_per_s_q3", "zp_adu_per_s_q4",
    "n_stars_for_zp_q1", "n_stars_for_zp_q2", "n_stars_for_zp_q3", "n_stars_for_zp_q4",
    "sky_adu_per_s_{inst}", "zp_adu_per_s_{inst}", "n_stars_for_zp_{inst}", "flag",
)


@dataclass(frozen=True)
class RedisSettings:
    """Where telemetry goes: host, port, database number, hash key, optional password."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    key: str = "pointing_camera"
    password: str | None = None
    ssl: bool = False
    username: str | None = None

    @classmethod
    def from_environment(cls, environ=None):
        """Settings from REDISHOST, REDISPORT, REDISDBNUM, REDISKEY and REDISPASSWORD."""
        env = os.environ if environ is None else environ
        try:
            port = int(env.get("REDISPORT", cls.port))
            db = int(env.get("REDISDBNUM", cls.db))
        except ValueError:
            raise InputError(None, "REDISPORT and REDISDBNUM must be integers") from None
        return cls(host=env.get("REDISHOST", cls.host), port=port, db=db,
                   key=env.get("REDISKEY", cls.key), password=env.get("REDISPASSWORD") or None)

    @classmethod
    def from_url(cls, url, *, key=None, password=None):
        """Settings from a ``redis://`` or ``rediss://`` (TLS) URL.

        ``redis://[[user]:password@]host[:port][/db]``; `key` is the hash key (default
        'pointing_camera'); `password` is used when the URL has none.
        """
        from urllib.parse import parse_qs, unquote, urlsplit

        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InputError(None, "the Redis URL is malformed (expected redis://host:port/db)") from None
        if parts.scheme not in ("redis", "rediss"):
            raise InputError(None, f"Redis URL scheme {parts.scheme!r}: expected redis:// or rediss://")
        db = parts.path.strip("/") or parse_qs(parts.query).get("db", [str(cls.db)])[0]
        try:
            db = int(db)
        except ValueError:
            raise InputError(None, "the Redis URL's database must be an integer") from None
        return cls(host=parts.hostname or cls.host, port=port or cls.port, db=db,
                   key=key or cls.key,
                   password=unquote(parts.password) if parts.password else (password or None),
                   ssl=parts.scheme == "rediss",
                   username=unquote(parts.username) if parts.username else None)

    def description(self):
        """Where telemetry goes, for logs: never the password."""
        scheme = "rediss" if self.ssl else "redis"
        auth = " (with password)" if self.password else ""
        return f"{scheme}://{self.host}:{self.port}/{self.db} key {self.key!r}{auth}"

    def __repr__(self):  # never show the password
        return f"RedisSettings(host={self.host!r}, port={self.port}, db={self.db}, key={self.key!r})"


def _value(x):
    """A Redis-safe value: ints as ints, floats as floats, NaN as the string 'nan'."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bool,)):
        return int(x)
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return "nan"
    return x


def telemetry_record(zeropoints, sky, timestamp, *, standard_aperture, sci_inst_name="desi", conditions=None,
                     pointing=None):
    """The seed's telemetry fields from the ZEROPOINTS and SKY tables of one frame, then, with
    a CONDITIONS table, the frame's `conditions.TELEMETRY_FIELDS`, then the frame's pointing
    fields when there are some.

    Parameters
    ----------
    zeropoints : numpy structured array
        The ZEROPOINTS table (rows per quadrant, aperture and science-FOV flag).
    sky : numpy structured array
        The one-row SKY table.
    timestamp : str
        Local time, e.g. '2021-06-21/22:13:35/MST/'.
    standard_aperture : int
        The aper_ind whose zeropoints are reported.
    sci_inst_name : str
        Suffix of the science-instrument fields.
    conditions : numpy structured array, optional
        The CONDITIONS table (`conditions.measure_conditions`).
    pointing : dict, optional
        `astrometry.pointing.pointing_record` of the frame (WCS origin, astrometric RMS,
        field centre, rotation, pixel scale, offset from the header pointing), appended.
    """
    def zp_row(quadrant, sci_only):
        rows = zeropoints[(zeropoints["quadrant"] == quadrant) & (zeropoints["aper_ind"] == standard_aperture)
                          & (zeropoints["science_fov_only"] == sci_only)]
        if len(rows) != 1:
            raise ValueError(f"ZEROPOINTS has {len(rows)} rows for quadrant {quadrant}")
        return rows[0]

    inst = sci_inst_name.lower()
    s = sky[0]
    record = {"timestamp": timestamp}
    whole = zp_row(0, False)
    record["zp_adu_per_s"] = whole["zp_adu_per_s"]
    record["sky_adu_per_s"] = s["median_adu_per_s"]
    record["mjd_obs"] = s["mjd_obs"]
    record["n_stars_for_zp"] = whole["n_sources_for_zp"]
    for q in range(1, 5):
        record[f"sky_adu_per_s_q{q}"] = s[f"median_adu_quad{q}_per_s"]
    for q in range(1, 5):
        record[f"zp_adu_per_s_q{q}"] = zp_row(q, False)["zp_adu_per_s"]
    for q in range(1, 5):
        record[f"n_stars_for_zp_q{q}"] = zp_row(q, False)["n_sources_for_zp"]
    sci = zp_row(0, True)
    record[f"sky_adu_per_s_{inst}"] = s["median_adu_sci_per_s"]
    record[f"zp_adu_per_s_{inst}"] = sci["zp_adu_per_s"]
    record[f"n_stars_for_zp_{inst}"] = sci["n_sources_for_zp"]
    record["flag"] = int(bool(s["has_dome"]))
    if conditions is not None:
        from .conditions import frame_values

        record.update(frame_values(conditions))
    record.update(pointing or {})
    return {k: _value(v) for k, v in record.items()}


def send_telemetry(record, settings, *, timeout_s=2.0):
    """Write `record` as one Redis hash (HSET) under `settings.key`; raise TelemetryError."""
    import redis

    client = connect(settings, timeout_s=timeout_s, retries=1)
    try:
        client.hset(settings.key, mapping=record)
    except redis.RedisError as exc:
        raise TelemetryError(f"telemetry to redis at {settings.host}:{settings.port} failed: "
                             f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    log.info("telemetry sent to redis %s:%d key %s", settings.host, settings.port, settings.key)


def redis_settings(environ=None):
    """Settings from the environment: REDISURL (redis:// or rediss://) when set, else
    REDISHOST, REDISPORT, REDISDBNUM; REDISKEY and REDISPASSWORD apply to both."""
    env = os.environ if environ is None else environ
    url = env.get("REDISURL")
    if url:
        return RedisSettings.from_url(url, key=env.get("REDISKEY"), password=env.get("REDISPASSWORD"))
    return RedisSettings.from_environment(env)


def connect(settings, *, timeout_s=2.0, retries=None):
    """A `redis.Redis` client for `settings` (no round trip is made here).

    Parameters
    ----------
    settings : RedisSettings
    timeout_s : float
        Socket connect and read timeout, s.
    retries : int, optional
        Retries of a failed command inside redis-py (default: the library's, which backs off
        for seconds); 0 fails at once, for callers that retry themselves.
    """
    import redis

    extra = {}
    if retries is not None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        extra["retry"] = Retry(NoBackoff(), int(retries))
    return redis.Redis(host=settings.host, port=settings.port, db=settings.db,
                       username=settings.username, password=settings.password, ssl=settings.ssl,
                       socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **extra)
