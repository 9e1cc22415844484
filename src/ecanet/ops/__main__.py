"""``python -m ecanet.ops``: builds (or finds) the compiled CPU kernels and says whether they load."""

import sys

from ecanet.ops import cpu_kernels

if __name__ == "__main__":
    ready = cpu_kernels.available()
    print(f"ecanet compiled CPU kernels ({cpu_kernels.build_name()}): {'ready' if ready else 'unavailable'}")
    sys.exit(0 if ready else 1)
