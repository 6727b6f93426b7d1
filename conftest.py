"""Root conftest: make the tests import the *installed* fasttrap.

`python -m pytest` puts the repository root on sys.path, where `fasttrap/` is the source tree
without the compiled `_core` (pip builds it into site-packages). Unless a core was built in place
(a developer's symlink), drop the root from sys.path so that `import fasttrap` finds the install.
"""

from __future__ import annotations

import os
import sys

_root = os.path.dirname(os.path.abspath(__file__))
_pkg = os.path.join(_root, "fasttrap")
if not any(name.startswith("_core") and name.endswith((".so", ".pyd")) for name in os.listdir(_pkg)):
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _root]
    for mod in [m for m in sys.modules if m == "fasttrap" or m.startswith("fasttrap.")]:
        del sys.modules[mod]
