import os
import stat

from ecanet.training.files import write_atomically


def test_written_files_follow_the_umask_not_mkstemps_owner_only_mode(tmp_path):
    target = tmp_path / "report.md"
    write_atomically(target, b"results")
    mode = stat.S_IMODE(os.stat(target).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
