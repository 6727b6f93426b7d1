#!/bin/bash
# Item 5 of issue 25: the sub-window at 100 epochs (budget agreement), then 3 seeds of regime 2 at 25 epochs.
cd /work/main
. .venv/bin/activate
export MPLBACKEND=Agg
/usr/bin/time -v python -m fasttrap.run --profile thesis --set outer.seeds=1 --set window.stop=78 \
  --set regime1.seeds=0 --set sensitivity.seeds=1 --set "inner.checkpoints=[0.125,0.25,0.5,0.75]" \
  --set certify.every=7 --no-progress --out runs/thesis-subwindow-100ep > runs/A.stdout 2> runs/A.stderr
/usr/bin/time -v python -m fasttrap.run --profile thesis --set outer.seeds=3 --set inner.epochs=25 \
  --set regime1.seeds=0 --set sensitivity.seeds=3 --set certify.every=20 --no-progress \
  --out runs/thesis-25ep > runs/B.stdout 2> runs/B.stderr
