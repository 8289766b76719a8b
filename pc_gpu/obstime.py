"""Times from the raw header: observing night, MJD, the telemetry timestamp."""

import datetime as dt

from .errors import InputError

__all__ = ["local_datetime", "observing_night", "telemetry_timestamp", "mjd_obs"]


def local_datetime(header, path=None):
    """Local (MST) start time from header DATE 'YYYY/MM/DD' and TIME 'HH:MM:SS'."""
    date, time = header.get("DATE"), header.get("TIME")
    if date is None or time is None:
        raise InputError(path, "header lacks DATE ('YYYY/MM/DD') or TIME ('HH:MM:SS', local MST)")
    try:
        return dt.datetime.strptime(f"{str(date).strip()} {str(time).strip()}", "%Y/%m/%d %H:%M:%S")
    except ValueError:
        raise InputError(path, f"header DATE/TIME {date!r} {time!r} not in 'YYYY/MM/DD' 'HH:MM:SS' form") from None


def observing_night(local):
    """Observing night 'YYYYMMDD': the local date, or the previous date before local noon."""
    if local.hour < 12:
        local = local - dt.timedelta(days=1)
    return local.strftime("%Y%m%d")


def telemetry_timestamp(local):
    """Local time formatted for telemetry, e.g. '2021-06-21/22:13:35/MST/'."""
    return local.strftime("%Y-%m-%d/%H:%M:%S") + "/MST/"


def mjd_obs(header, local, utc_offset_hours):
    """MJD at the start of the exposure: header MJD-OBS when present, else from local time."""
    value = header.get("MJD-OBS")
    if value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    utc = local - dt.timedelta(hours=utc_offset_hours)
    mjd0 = dt.datetime(1858, 11, 17)
    return (utc - mjd0).total_seconds() / 86400.0
