"""`pc-archive`: reprocess an archive of frames, exactly once and resumably, on a local
process pool, a GPU, or a Dask cluster; season tables in Parquet.

Modules: `discover` (inputs -> frames in night/time order), `task` (the one task function all
engines run), `engines` (local pool, GPU pipeline, Dask), `run` (ledger, lock, dispatch,
progress, exit status), `season` (Parquet tables), `cli` (the command).
"""

from .cli import main

__all__ = ["main"]
