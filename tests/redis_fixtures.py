"""A real redis-server on 127.0.0.1 for the tests (installed by scripts/ensure_redis.sh)."""

import shutil
import socket
import subprocess
import time

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process on 127.0.0.1 that can be stopped and started again."""

    def __init__(self, workdir, *, args=(), **client_options):
        self.workdir = workdir
        self.port = _free_port()
        self.proc = None
        self.args = list(args)   # more redis-server options, e.g. a password or TLS; "{port}" is our port
        self.client_options = client_options   # what a client needs (password, ssl, ...)

    def start(self):
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not found: run the tests through scripts/test.sh, which installs it")
        args = [a.replace("{port}", str(self.port)) for a in self.args]
        if "--port" not in args:
            args = ["--port", str(self.port)] + args
        with open(f"{self.workdir}/redis-server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                 *args], stdout=log, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, **self.client_options)
        for _ in range(200):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server {' '.join(args)} did not start (see {self.workdir}/redis-server.log)")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **self.client_options)

    def environ(self, key="pc_test"):
        """Environment variables that point the pipeline at this server."""
        return {"REDISHOST": "127.0.0.1", "REDISPORT": str(self.port), "REDISDBNUM": "0", "REDISKEY": key}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A running redis-server, flushed before each use by `redis_client`."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client of the session's redis-server with an empty database."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
