import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def subprocess_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ``python -m ecanet`` subprocesses: one thread each, the tiny model importable.

    Their temporary files (torchrun's log folders among them) go under pytest's own temporary
    folder, which pytest prunes, instead of piling up in the system's.
    """
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp_path_factory.mktemp("subprocess-tmp"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env
