"""The ledger of `pc-realtime` and `pc-archive`: an append-only JSON-lines journal of every
frame's fate.

One JSON object per line, each appended with a single write and fsync'd, so a crash loses at
most a torn last line (dropped, with a warning, when the ledger is opened again). Events:

- ``{"event": "service", "service_id": ...}``: the first line; names this service (telemetry
  records carry it, so a redelivery can be recognised).
- ``{"event": "start", "frame": NAME, "seq": N, "stream_id": "MS-0"}``: a frame is in hand.
  Its sequence number and stream ID are reused if the frame has to be taken up again after a
  crash, so its telemetry is never delivered twice.
- ``{"event": "telemetry", "frame", "seq", "stream_id", "record": {...}}``: a telemetry
  record queued for Redis (written before delivery is tried).
- ``{"event": "delivered", "seq", "stream_id", "frame"}``: that record is in Redis.
- ``{"event": "done" | "skipped" | "failed", "frame", "reason", ...}``: the frame's outcome.

`pc-archive` writes ``start`` events without seq/stream_id (with path, night and the output
directory) and no telemetry events; `Ledger.append_many` writes a chunk's events with one fsync.

Every line also has ``"time"`` (UTC, ISO 8601).
"""

import datetime as dt
import fcntl
import json
import logging
import os
import uuid

from .errors import InputError

__all__ = ["Ledger", "FINAL_EVENTS", "lock_directory"]

log = logging.getLogger(__name__)

FINAL_EVENTS = ("done", "skipped", "failed")


def _now_iso():
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Ledger:
    """Open (or create) the ledger at `path` and replay it.

    Attributes
    ----------
    service_id : str
        This service's identity (kept across restarts).
    outcomes : dict
        frame name -> its last final event (dict).
    in_hand : dict
        frame name -> its last ``start`` event, for frames started but with no outcome since.
    starts : dict
        frame name -> number of ``start`` events since its last outcome.
    pending : dict
        seq -> queued ``telemetry`` event not yet delivered, in seq order.
    telemetry_of : dict
        frame name -> {"seq", "stream_id", "delivered"} of its last queued telemetry record,
        kept after the frame's outcome, so that a frame taken up again (after a failure to
        write its files) reuses its IDs and its record is not added twice.
    last_seq, last_stream_ms : int
        The highest sequence number and stream-ID milliseconds handed out.
    """

    def __init__(self, path):
        self._load(path, repair=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if self.service_id is None:
            self.service_id = uuid.uuid4().hex
            self.append("service", service_id=self.service_id)

    @classmethod
    def read(cls, path):
        """Replay the ledger at `path` without writing to it (a service may be appending to it
        now): a torn last line is skipped, not truncated. The result cannot `append`."""
        self = cls.__new__(cls)
        self._fh = None
        self._load(path, repair=False)
        return self

    def _load(self, path, *, repair):
        """The state replayed from the file at `path` (see the attributes)."""
        self.path = os.fspath(path)
        self.service_id = None
        self.outcomes = {}
        self.in_hand = {}
        self.starts = {}
        self.pending = {}
        self.telemetry_of = {}
        self.last_seq = 0
        self.last_stream_ms = 0
        self._replay(repair=repair)

    def _replay(self, *, repair):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as fh:
            data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data) and repair:
            log.warning("%s: dropping a torn last line (%d bytes) left by a crash", self.path, len(data) - end)
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        for number, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s line %d is not a ledger record (%s); ignored", self.path, number, exc)

    def _apply(self, rec):
        event = rec["event"]
        if event == "service":
            self.service_id = self.service_id or rec["service_id"]
        elif event == "start":
            frame = rec["frame"]
            self.in_hand[frame] = rec
            self.starts[frame] = self.starts.get(frame, 0) + 1
            self._saw_seq(rec)
        elif event == "telemetry":
            self.pending[int(rec["seq"])] = rec
            self.pending = dict(sorted(self.pending.items()))
            self.telemetry_of[rec["frame"]] = {"seq": int(rec["seq"]), "stream_id": rec["stream_id"],
                                               "delivered": False}
            self._saw_seq(rec)
        elif event == "delivered":
            self.pending.pop(int(rec["seq"]), None)
            sent = self.telemetry_of.get(rec.get("frame"))
            if sent is not None and sent["seq"] == int(rec["seq"]):
                sent["delivered"] = True
        elif event in FINAL_EVENTS:
            frame = rec["frame"]
            self.outcomes[frame] = rec
            self.in_hand.pop(frame, None)
            self.starts.pop(frame, None)

    def _saw_seq(self, rec):
        if rec.get("seq") is not None:
            self.last_seq = max(self.last_seq, int(rec["seq"]))
        if rec.get("stream_id"):
            self.last_stream_ms = max(self.last_stream_ms, int(str(rec["stream_id"]).split("-")[0]))

    def append(self, event, **fields):
        """Append one event durably (write + fsync) and apply it; return the record."""
        return self.append_many([(event, fields)])[0]

    def append_many(self, events):
        """Append several events, given as (event, fields) pairs, with one write and one fsync
        (a crash keeps a prefix of them); apply them and return the records."""
        stamp = _now_iso()
        recs = [{"event": event, "time": stamp, **fields} for event, fields in events]
        self._fh.write("".join(json.dumps(rec, separators=(",", ":"), allow_nan=False, default=_jsonable) + "\n"
                               for rec in recs))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        for rec in recs:
            self._apply(rec)
        return recs

    def next_ids(self, now_ms):
        """A new (seq, stream_id): both strictly increasing across the ledger's life."""
        ms = max(int(now_ms), self.last_stream_ms + 1)
        return self.last_seq + 1, f"{ms}-0"

    def outcome(self, frame):
        """The frame's final event, or None."""
        return self.outcomes.get(frame)

    def close(self):
        """Close the file (every event is already on disk)."""
        if self._fh is not None:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def lock_directory(directory, lock_name, program):
    """Take an exclusive lock on ``directory/lock_name`` for this process, or raise InputError
    saying that another `program` is writing there; return the open lock file (closing it, or
    the process ending in any way, releases the lock)."""
    handle = open(os.path.join(directory, lock_name), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(directory, f"another {program} is already writing here") from None
    return handle


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
