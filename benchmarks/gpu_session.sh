#!/usr/bin/env bash
# One call on a lent GPU machine: build fasttrap with CUDA, run the GPU tests, the GPU benchmarks
# and the reference-analysis timing. Stages are time-boxed; every stage's full log goes to $OUT (keep
# them beside the results: benchmarks/results/<device>/). The script exits non-zero if any stage
# failed (a failed test, a timeout, a crash), so a green call means every stage passed.
#   bash benchmarks/gpu_session.sh [tests|bench|analysis|module|all]...   (default: all)
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT=${OUT:-/tmp/fasttrap-out}
mkdir -p "$OUT"
REPO=$(pwd)
stages=${*:-all}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
t0=$(date +%s)
export FASTTRAP_CUDA=ON CUDAARCHS=${CUDAARCHS:-90}
# KEEP_BUILD=1 on a warm machine that already installed this tree: no second build.
if [ "${KEEP_BUILD:-0}" = 1 ] && (cd /tmp && python3 -c "import fasttrap, sys; sys.exit(0 if fasttrap.built_with_cuda() else 1)"); then
  echo "build: kept from the previous call"
else
  python3 -m pip install --no-build-isolation --no-deps --no-index . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
cd /tmp
python3 -c "import fasttrap; print(fasttrap.backend_info()); from fasttrap.ops import cuda, _loader; cuda._ensure_cublas(); print('cublas', _loader.core.cuda_cublas_path())" || fail=1
fail=0
# run NAME SECONDS CMD...: time-boxed; prints and returns CMD's exit status (pipefail carries it
# through the tee/tail pipelines below, and `|| fail=1` remembers it).
# Each box is clamped to what is left of the device tool's per-command limit (CALL_LIMIT, 600 s by
# default) less 40 s, so that a stage times out by itself and the steps after it (the archive of the
# thesis run) still happen: a box longer than the call once lost a whole run.
run() {
  local name=$1 box=$2; shift 2
  local left=$(( ${CALL_LIMIT:-600} - ($(date +%s) - t0) - 40 ))
  [ "$box" -gt "$left" ] && box=$left
  [ "$box" -lt 1 ] && { echo "=== $name: no time left in this call"; return 124; }
  echo "=== $name (time box $box s)"; timeout "$box" "$@"; local rc=$?; echo "(exit $rc)"; return $rc
}
case " $stages " in *" tests "*|*" all "*)
  run "GPU tests" ${TESTS_TIMEOUT:-300} python3 -m pytest "$REPO/tests" -q -x -k "cuda or gpu" -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -25 || fail=1 ;;
esac
case " $stages " in *" bench "*|*" all "*)
  rm -f "$REPO"/benchmarks/results/cuda_grad_G.jsonl
  run "GPU benchmarks" ${BENCH_TIMEOUT:-420} python3 -m pytest "$REPO/benchmarks/bench_cuda.py" -q -p no:cacheprovider \
      --benchmark-json="$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench.log" | tail -30 || fail=1
  cp "$REPO"/benchmarks/results/cuda_grad_G.* "$OUT/" 2>/dev/null; cat "$OUT/cuda_grad_G.md" 2>/dev/null ;;
esac
case " $stages " in *" benchshort "*)
  # The fair peer only, at K = 900: fasttrap-cuda (FP32, TF32) against torch.compile "reduce-overhead".
  rm -f "$REPO"/benchmarks/results/cuda_grad_G.jsonl
  run "GPU benchmark (K = 900, reduce-overhead peers)" ${BENCH_TIMEOUT:-150} python3 -m pytest "$REPO/benchmarks/bench_cuda.py" -q \
      -p no:cacheprovider -k "900 and (fasttrap-cuda or reduce-overhead)" 2>&1 | tee "$OUT/benchshort.log" | tail -12 || fail=1
  cp "$REPO"/benchmarks/results/cuda_grad_G.* "$OUT/" 2>/dev/null; cat "$OUT/cuda_grad_G.md" 2>/dev/null ;;
esac
case " $stages " in *" analysis "*|*" all "*)
  run "reference analysis" 400 python3 "$REPO/benchmarks/gpu_reference_analysis.py" --epochs "${EPOCHS:-100}" --out "$OUT" 2>&1 | tee "$OUT/analysis.log" | tail -30 || fail=1 ;;
esac
case " $stages " in *" profile "*)
  run "profile" 200 python3 "$REPO/benchmarks/gpu_profile.py" 2>&1 | tee "$OUT/profile.log" | tail -32 || fail=1 ;;
esac
case " $stages " in *" cudatests "*)
  run "CUDA tests" 200 python3 -m pytest "$REPO/tests/ops/test_cuda.py" -q -p no:cacheprovider 2>&1 | tee "$OUT/cudatests.log" | tail -4 || fail=1 ;;
esac
case " $stages " in *" thesis "*)
  # The main job itself, thesis profile (the reference protocol), on the GPU. THESIS_ARGS adds
  # --set overrides. Whatever the run wrote that is small (reports, json, figures, manifests, not
  # the endpoint arrays) comes back as one archive, also when the stage ran out of time.
  run "thesis profile" ${THESIS_TIMEOUT:-480} python3 -m fasttrap.run --profile thesis --backend cuda --out /tmp/thesis \
      ${THESIS_ARGS:-} 2>&1 | grep --line-buffered -v "ETA" | tee "$OUT/thesis.log" | tail -25 || fail=1
  (cd /tmp && find thesis -type f \( -name "*.md" -o -name "*.json" -o -name "*.toml" -o -name "*.png" \
      -o -path "*certify/*" -o -name "traps.npz" -o -name "identity.npz" \) -print0 | tar czf "$OUT/thesis_run.tar.gz" --null -T -)
  ls -la "$OUT" ;;
esac
case " $stages " in *" module "*)
  # Any module (fasttrap.TorchModel) on the GPU: its tests, the generic-vs-naive benchmark, and the
  # small conv net's aging run (quick "smallnet" profile, on MNIST: Fashion-MNIST is Debian's package,
  # not on this machine).
  run "TorchModel GPU tests" ${MODULE_TESTS_TIMEOUT:-150} python3 -m pytest "$REPO/tests/model/test_torchmodel_cuda.py" \
      "$REPO/tests/model/test_torchmodel.py" -q -p no:cacheprovider 2>&1 | tee "$OUT/module_tests.log" | tail -6 || fail=1
  rm -f "$REPO"/benchmarks/results/cuda_module.jsonl
  run "TorchModel GPU benchmark" ${MODULE_BENCH_TIMEOUT:-200} env FASTTRAP_BENCH_DEVICE=cuda python3 -m pytest \
      "$REPO/benchmarks/bench_module.py" -q -s -p no:cacheprovider 2>&1 | tee "$OUT/module_bench.log" | tail -14 || fail=1
  cp "$REPO"/benchmarks/results/cuda_module.* "$OUT/" 2>/dev/null
  run "smallnet aging on the GPU" ${MODULE_AGING_TIMEOUT:-150} python3 -m fasttrap.run --analysis aging --profile smallnet \
      --set data.name=mnist --out /tmp/smallnet-gpu --no-progress 2>&1 | tee "$OUT/module_aging.log" | tail -4 || fail=1
  cp /tmp/smallnet-gpu/report.md "$OUT/smallnet_gpu_report.md" 2>/dev/null ;;
esac
case " $stages " in *" analysis32 "*)
  run "reference analysis tf32" 400 python3 "$REPO/benchmarks/gpu_reference_analysis.py" --tf32 --epochs "${EPOCHS:-100}" --out "$OUT" 2>&1 | tee "$OUT/analysis32.log" | tail -30 || fail=1 ;;
esac
echo "gpu_session: $([ $fail = 0 ] && echo 'every stage passed' || echo 'A STAGE FAILED (see the logs in $OUT)')"
exit $fail
