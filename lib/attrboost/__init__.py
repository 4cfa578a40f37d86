"""attrboost: boost a frozen image embedding for retrieval with multi-attribute labels."""
import os as _os

# OpenMP threads that busy-wait between parallel regions steal the CPU from everything else on a small
# machine (measured about 2x slower extraction when another job shares 2 cores). Passive waiting costs
# nothing when the machine is idle. Only takes effect if set before torch is first imported; a value the
# user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
