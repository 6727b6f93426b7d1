"""Compare every array of two run directories byte for byte (figures aside), as tests/run/test_dask.py does.

    python docs/recorded/dask-vs-local/compare.py LOCAL_RUN DASK_RUN > docs/recorded/dask-vs-local/compare.txt
"""

import sys
from pathlib import Path

from fasttrap.common import store


def arrays(d: Path) -> dict:
    return {f"{p.relative_to(d)}:{k}": v for p in sorted(d.rglob("*.npz")) if p.relative_to(d).parts[0] != "figures"
            for k, v in store.read_npz(p).items()}


a, b = (Path(x) for x in sys.argv[1:3])
x, y = arrays(a), arrays(b)
print(f"local: {a}  ({len(x)} arrays)\ndask:  {b}  ({len(y)} arrays)")
print(f"only in one: {sorted(set(x) ^ set(y))}")
diff = [k for k in sorted(set(x) & set(y)) if x[k].dtype != y[k].dtype or x[k].tobytes() != y[k].tobytes()]
for group in sorted({k.split("/")[0].split(":")[0] for k in x}):
    keys = [k for k in x if k.split("/")[0].split(":")[0] == group]
    print(f"{group:12s} {len(keys):4d} arrays, {sum(k in diff for k in keys)} differ")
print(f"differ: {diff}")
sys.exit(1 if diff or set(x) ^ set(y) else 0)
