"""Telemetry delivery for the realtime service: a disk queue, in-order delivery, no duplicates.

Each reduced frame's record is first written to the ledger (``telemetry`` event, fsync'd),
then delivered in one Redis transaction: XADD to the history stream with an explicit ID that
the ledger assigned when the frame was taken up, and HSET of the seed's hash (latest values).
Delivery is recorded as a ``delivered`` event. After a crash or an outage, undelivered
records are sent again in order; a record that did reach Redis is recognised by its stream ID
(XADD refuses an ID that is not above the stream's last one) together with the service ID and
sequence number stored in the entry, so it is never added twice.

Redis keys (``KEY`` is REDISKEY, default 'pointing_camera'):

- ``KEY``: hash, the seed's telemetry fields of the latest frame.
- ``KEY:history``: stream, one entry per reduced frame: the same fields plus ``frame`` (raw
  file name), ``seq`` and ``service``.
- ``KEY:heartbeat``: hash with a TTL: the service is alive, and what it last did.
"""

import logging
import time

__all__ = ["TelemetryPublisher"]

log = logging.getLogger(__name__)

_ID_TOO_SMALL = "equal or smaller"


class TelemetryPublisher:
    """Queue telemetry records in the ledger and deliver them to Redis in order.

    Parameters
    ----------
    settings : pc_gpu.telemetry.RedisSettings
    ledger : pc_gpu.ledger.Ledger
    stream_key, heartbeat_key : str, optional
        Default ``KEY:history`` and ``KEY:heartbeat``.
    stream_maxlen : int
        Approximate cap on the stream's length (0: unlimited).
    heartbeat_ttl_s : float
        Lifetime of the heartbeat key, s.
    timeout_s : float
        Redis socket timeouts, s.
    max_backoff_s : float
        Longest wait between delivery attempts while Redis is down, s.
    """

    def __init__(self, settings, ledger, *, stream_key=None, heartbeat_key=None, stream_maxlen=100000,
                 heartbeat_ttl_s=30.0, timeout_s=1.0, max_backoff_s=2.0):
        from .telemetry import connect

        self.settings = settings
        self.ledger = ledger
        self.stream_key = stream_key or f"{settings.key}:history"
        self.heartbeat_key = heartbeat_key or f"{settings.key}:heartbeat"
        self.stream_maxlen = int(stream_maxlen) or None
        self.heartbeat_ttl_s = float(heartbeat_ttl_s)
        self.max_backoff_s = float(max_backoff_s)
        self.client = connect(settings, timeout_s=timeout_s, retries=0)   # we retry ourselves
        self.up = None            # unknown until the first attempt
        self._backoff = 0.0
        self._retry_at = 0.0
        self.delivered = 0

    @property
    def n_pending(self):
        """Records waiting for delivery."""
        return len(self.ledger.pending)

    def enqueue(self, frame, seq, stream_id, record):
        """Queue one frame's record durably (before any delivery is tried)."""
        self.ledger.append("telemetry", frame=frame, seq=int(seq), stream_id=stream_id, record=record)

    def due(self):
        """True when an attempt is allowed now (Redis up, or its backoff has elapsed)."""
        return time.monotonic() >= self._retry_at

    def flush(self, *, force=False):
        """Deliver queued records in order until done or Redis fails; return how many."""
        import redis

        if not self.ledger.pending or not (force or self.due()):
            return 0
        n = 0
        for seq, event in list(self.ledger.pending.items()):
            try:
                actual = self._deliver(event)
            except redis.RedisError as exc:
                self._down(exc)
                return n
            self.ledger.append("delivered", seq=seq, stream_id=actual, frame=event["frame"])
            n += 1
        self.delivered += n
        self._up()
        return n

    def _deliver(self, event):
        record, seq, stream_id = event["record"], int(event["seq"]), event["stream_id"]
        fields = {**record, "frame": event["frame"], "seq": seq, "service": self.ledger.service_id}
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.stream_key, fields, id=stream_id, maxlen=self.stream_maxlen, approximate=True)
        pipe.hset(self.settings.key, mapping=record)
        added, hset = pipe.execute(raise_on_error=False)
        if isinstance(hset, Exception):
            raise hset
        if not isinstance(added, Exception):
            return stream_id
        if _ID_TOO_SMALL not in str(added):
            raise added
        found = self._find(stream_id, seq)
        if found is not None:
            log.info("telemetry of %s (seq %d) was already in %s as %s; not added again",
                     event["frame"], seq, self.stream_key, found)
            return found
        actual = self.client.xadd(self.stream_key, fields, maxlen=self.stream_maxlen, approximate=True)
        actual = actual.decode() if isinstance(actual, bytes) else actual
        log.warning("%s holds entries newer than %s (another writer, or a clock change): %s added as %s",
                    self.stream_key, stream_id, event["frame"], actual)
        return actual

    def _find(self, stream_id, seq, *, look_back=2000):
        """The ID of this service's entry with sequence number `seq`, if in the stream."""
        def ours(fields):
            f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in fields.items()}
            return f.get("service") == self.ledger.service_id and f.get("seq") == str(seq)

        for entry_id, fields in self.client.xrange(self.stream_key, stream_id, stream_id, count=1):
            if ours(fields):
                return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        for entry_id, fields in self.client.xrevrange(self.stream_key, count=look_back):
            if ours(fields):
                return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return None

    def heartbeat(self, status):
        """Set the heartbeat hash (with its TTL); False if Redis could not be reached."""
        import redis

        if not self.due():
            return False
        fields = {k: ("" if v is None else v) for k, v in status.items()}
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.heartbeat_key)
            pipe.hset(self.heartbeat_key, mapping=fields)
            pipe.expire(self.heartbeat_key, max(1, int(round(self.heartbeat_ttl_s))))
            pipe.execute()
        except redis.RedisError as exc:
            self._down(exc)
            return False
        self._up()
        return True

    def _down(self, exc):
        self._backoff = min(self.max_backoff_s, max(0.25, 2 * self._backoff))
        self._retry_at = time.monotonic() + self._backoff
        if self.up is not False:
            log.warning("redis at %s unreachable (%s: %s); %d telemetry record(s) queued on disk, "
                        "retrying", self.settings.description(), type(exc).__name__, exc, self.n_pending)
        self.up = False

    def _up(self):
        if self.up is False:
            log.info("redis at %s reachable again", self.settings.description())
        self.up = True
        self._backoff = 0.0
        self._retry_at = 0.0

    def close(self):
        """Close the connection (queued records stay in the ledger)."""
        self.client.close()
