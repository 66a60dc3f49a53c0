"""Compiled kernels (numba on CPU, Triton on GPU), imported lazily by the ops that use them.

numba's on-disk cache goes to ``$NUMBA_CACHE_DIR`` when the user set it, else to
``$XDG_CACHE_HOME/spikescan/numba`` (``~/.cache/spikescan/numba``) instead of ``__pycache__``
folders inside the installed package: the cache of every kernel variant a test suite compiles
is tens of MB, and a read-only install could not hold it.  Set here, before numba is imported
(the ops import it on first use); if numba was imported earlier its own setting stays.
"""

import os
import sys

if "NUMBA_CACHE_DIR" not in os.environ and "numba" not in sys.modules:
    _base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, "spikescan", "numba")
