"""Where the blocks of a run execute: in this process, or as tasks on a Dask cluster.

A run's expensive work is cut into **tasks** that are independent and idempotent: one block of start
points of the inner stage (or of a rerun), one seed of the certification, one network's aging run. Each task reads what it
needs from the run directory, writes its one output file atomically, and is skipped when that file
exists; its random streams derive from (seed, stage, start-point index), never from where it runs.
So any executor computes the same bytes:

* ``run.executor = "local"`` (default): the tasks run one after the other in this process, with the
  compiled core's threads, and a progress bar fed by the core's counters.
* ``run.executor = "dask"``: the tasks are submitted to a Dask cluster (Dask distributed, an optional
  extra: ``pip install "fasttrap[dask]"``). The cluster is

  - the scheduler at ``run.scheduler`` (``tcp://host:port``), when given;
  - else a fresh one of ``cluster.kind``: ``local`` (a ``LocalCluster`` of ``cluster.workers``
    processes × ``cluster.threads`` threads), or ``slurm``, ``pbs``, ``sge``, ``lsf`` through
    dask-jobqueue, with ``cluster.cores``, ``memory``, ``walltime``, ``queue``, ``account`` and
    ``job_extra`` passed through, and ``cluster.workers`` jobs (or ``cluster.adaptive_max`` for
    adaptive scaling).

  Before any task runs, every worker must see the run directory (a token file written here and
  read there); a worker that cannot is named and the run refused. A worker that dies mid-task
  (killed, lost) has its task rerun elsewhere by Dask (up to ``distributed.scheduler.allowed-failures``
  deaths per task); a task that raises fails the run once, with the worker's traceback, and is not
  retried; a lost scheduler stops the run with a message saying how to resume. Each worker sets
  the compiled core's threads to its own thread count.
"""

from __future__ import annotations

import asyncio
import time
import importlib
import secrets
from concurrent.futures import CancelledError
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..common.progress import Progress
from .config import ConfigError
from .rundir import RunError, log

INSTALL = 'pip install "fasttrap[dask]"'
JOBQUEUE = ("slurm", "pbs", "sge", "lsf")


@dataclass
class Task:
    """One idempotent unit of work.

    Attributes:
        key: a unique, readable name (``inner-main-0003``).
        fn: a module-level function ``fn(run, ds, *args, bar=None, offset=0) -> dict`` that computes
            and writes ``output`` and returns what the manifest records of it.
        args: its arguments after (run, ds).
        output: the file it writes; the task is skipped when it exists.
        work: its size in model-steps (or another unit), for the progress bar.
    """

    key: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    output: Path
    work: int = 0

    def what(self) -> dict[str, Any]:
        """What its output is, for the run's ledger: the task and its arguments (variant, block,
        start-point range; or the seed)."""
        args = [a.item() if hasattr(a, "item") else a for a in self.args]        # NumPy scalars
        return {"task": self.key, "args": [a if isinstance(a, (str, int, float)) else str(a) for a in args]}


class LocalExecutor:
    """The tasks in order, in this process (the default)."""

    name = "local"

    def run(self, run: Any, ds: Any, tasks: list[Task], bar: Progress) -> Iterator[tuple[Task, dict[str, Any]]]:
        offset = 0
        for t in tasks:
            entry = t.fn(run, ds, *t.args, bar=bar, offset=offset)
            run.record(t.output, t.what())
            yield t, entry
            offset += t.work

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- on a worker ---
_CACHE: dict[str, tuple[Any, Any]] = {}


def _on_worker(run_dir: str, module: str, name: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """A task as a worker runs it: the run and its data set from the directory (kept for the next
    task of the same run), the core's threads from the worker's own, the task, its manifest entry."""
    from ..ops import backend
    from . import config as cfgmod
    from .rundir import Run
    from .stages.data import load_dataset

    try:
        from distributed import get_worker

        backend.set_num_threads(max(1, int(get_worker().state.nthreads)))
    except (ImportError, ValueError, AttributeError):
        pass
    if run_dir not in _CACHE:
        cfg = cfgmod.from_saved(Path(run_dir) / "config.toml")
        run = Run(Path(run_dir), cfg)          # tasks never write the manifest: the client does
        _CACHE.clear()
        _CACHE[run_dir] = (run, load_dataset(cfg))
    run, ds = _CACHE[run_dir]
    fn = getattr(importlib.import_module(module), name)
    return fn(run, ds, *args, bar=False, offset=0)


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


# ------------------------------------------------------------------------------ the client ---
class DaskExecutor:
    """The tasks as Dask futures on a cluster (see the module docstring)."""

    name = "dask"

    def __init__(self, cfg: dict[str, Any], run_dir: Path):
        try:
            import distributed
        except ImportError:
            raise ConfigError(f"run.executor = 'dask' needs Dask distributed, which is not installed: {INSTALL}") from None
        self._distributed = distributed
        self.cluster = None
        addr = cfg["run.scheduler"]
        try:
            if addr:
                self.client = distributed.Client(addr, timeout="30s")
            else:
                self.cluster = make_cluster(cfg)
                self.client = distributed.Client(self.cluster)
                if cfg["cluster.kind"] != "local":
                    if cfg["cluster.adaptive_max"]:
                        self.cluster.adapt(minimum=0, maximum=cfg["cluster.adaptive_max"])
                    else:
                        self.cluster.scale(jobs=cfg["cluster.workers"])
        except (OSError, TimeoutError) as exc:
            raise RunError(f"run.executor = 'dask': cannot reach the scheduler {addr or ''} ({exc})") from None
        where = addr or f"a new {cfg['cluster.kind']} cluster"
        log(f"dask: {where}; dashboard {self.client.dashboard_link}")
        if cfg["cluster.kind"] == "local" and not addr:
            self.client.wait_for_workers(cfg["cluster.workers"], timeout=120)
        check_shared_storage(self.client, run_dir)

    def run(self, run: Any, ds: Any, tasks: list[Task], bar: Progress) -> Iterator[tuple[Task, dict[str, Any]]]:
        d = self._distributed
        futs = {self.client.submit(_on_worker, str(run.dir.resolve()), t.fn.__module__, t.fn.__name__, t.args,
                                   key=f"fasttrap-{t.key}-{secrets.token_hex(4)}", pure=False, retries=0): t
                for t in tasks}
        done_work = 0
        try:
            for fut in d.as_completed(list(futs)):
                t = futs[fut]
                if fut.status == "error":
                    exc, tb = fut.exception(), fut.traceback()
                    text = "".join(traceback.format_exception(type(exc), exc, tb))
                    raise RunError(f"task {t.key} failed on a Dask worker (not retried: it would fail again):\n{text}")
                res = fut.result()
                run.record(t.output, t.what())        # the worker wrote it; the ledger is kept here
                done_work += t.work
                bar.update_to(done_work)
                yield t, res
        except (OSError, TimeoutError, CancelledError, asyncio.CancelledError, d.comm.CommClosedError) as exc:
            # a lost scheduler shows as a closed comm, a refused connection, or (depending on when the
            # client notices) futures cancelled for "scheduler-connection-lost"
            raise self._lost(exc) from None
        except d.KilledWorker as exc:
            raise RunError(f"Dask gave up on a task whose workers kept dying ({exc}); finished blocks are saved, "
                           "continue with --resume") from None
        except RunError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else while the client has lost its scheduler
            if getattr(self.client, "status", "running") != "running":
                raise self._lost(exc) from None
            raise
        finally:
            for f in futs:
                if not f.done():
                    f.cancel()

    @staticmethod
    def _lost(exc: BaseException) -> RunError:
        return RunError(f"lost the Dask scheduler ({type(exc).__name__}: {exc}). Finished blocks are saved; "
                        "start a scheduler and continue with --resume (settings run.scheduler / cluster.*)")

    def close(self) -> None:
        """Close the client (and the cluster this executor started). Never raises: it runs on the way
        out of a failed run too, where the scheduler may be gone, and must not mask why the run failed."""
        for thing in (self.client, self.cluster):
            if thing is None:
                continue
            try:
                thing.close(timeout=10)
            except Exception:  # noqa: BLE001
                pass


def check_shared_storage(client: Any, run_dir: Path) -> None:
    """Refuse to start unless every worker sees ``run_dir``: a token written here must read back there.

    Raises:
        RunError: naming the workers that cannot see it.
    """
    run_dir = Path(run_dir).resolve()
    token = secrets.token_hex(16)
    probe = run_dir / ".fasttrap-storage-check"
    probe.write_text(token)
    try:
        seen = client.run(_sees, str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(w for w, ok in seen.items() if not ok)
    if not seen:
        raise RunError("the Dask cluster has no workers")
    if blind:
        raise RunError(f"{len(blind)} of {len(seen)} Dask workers cannot see the run directory {run_dir} "
                       f"({', '.join(blind)}): the run directory must be on storage every worker shares "
                       "(a network file system); choose --out there")


def make_cluster(cfg: dict[str, Any]) -> Any:
    """A new cluster of ``cluster.kind`` (not yet scaled for the jobqueue kinds)."""
    kind = cfg["cluster.kind"]
    if kind == "local":
        from distributed import LocalCluster

        return LocalCluster(n_workers=cfg["cluster.workers"], threads_per_worker=cfg["cluster.threads"],
                            processes=True, dashboard_address=":0")
    return jobqueue_cluster(cfg)


def jobqueue_cluster(cfg: dict[str, Any]) -> Any:
    """A dask-jobqueue cluster of ``cluster.kind`` with the pass-through settings (no job submitted yet)."""
    kind = cfg["cluster.kind"]
    if kind not in JOBQUEUE:
        raise ConfigError(f"cluster.kind: expected 'local' or one of {', '.join(JOBQUEUE)}, got {kind!r}")
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"cluster.kind = {kind!r} needs dask-jobqueue, which is not installed: {INSTALL}") from None
    cls = getattr(dask_jobqueue, {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster",
                                  "lsf": "LSFCluster"}[kind])
    kw: dict[str, Any] = {"cores": cfg["cluster.cores"] or cfg["cluster.threads"], "processes": 1,
                          "memory": cfg["cluster.memory"], "walltime": cfg["cluster.walltime"]}
    if cfg["cluster.queue"]:
        kw["queue"] = cfg["cluster.queue"]
    if cfg["cluster.account"]:
        kw["account"] = cfg["cluster.account"]
    extra = [x.strip() for x in cfg["cluster.job_extra"].split(";") if x.strip()]
    if extra:
        kw["job_extra_directives"] = extra
    if cfg["cluster.python"]:
        kw["python"] = cfg["cluster.python"]
    # the worker's core threads follow its cores (fasttrap sets them from the worker's thread count)
    kw["job_script_prologue"] = [f"export OMP_NUM_THREADS={kw['cores']}"]
    return cls(**kw)


def run_tasks(executor: Any, run: Any, ds: Any, todo: list[Task], desc: str, unit: str,
              progress: bool | None) -> list[tuple[Task, dict[str, Any]]]:
    """Every task of ``todo`` on ``executor`` under one progress bar over their ``work``: fed by the
    tasks themselves in this process, advanced as tasks finish on a cluster. Returns (task, entry) pairs."""
    bar = Progress(sum(t.work for t in todo), desc, unit, enabled=progress)
    done = []
    try:
        for t, entry in executor.run(run, ds, todo, bar):
            if executor.name != "local":
                bar.update_to(bar.n + t.work)
            done.append((t, entry))
    finally:
        bar.close()
    return done


def make_executor(cfg: dict[str, Any], run_dir: Path) -> LocalExecutor | DaskExecutor:
    """The executor the settings ask for."""
    if cfg["run.executor"] == "dask":
        return DaskExecutor(cfg, run_dir)
    return LocalExecutor()


def run_analysis(run: Any, progress: bool | None, stages: list[Callable[..., None]],
                 report: Callable[[Any, Any], str]) -> str:
    """The skeleton every task-based analysis shares: the data, its stages on one executor (closed
    whatever happens), the report, the run's wall time. Returns the report's summary.

    Args:
        stages: ``stage(run, ds, progress, executor)``, in order; each skips what is already done.
        report: ``report(run, ds)`` → the short summary printed at the end.
    """
    from .stages.data import stage_data

    t_all = time.perf_counter()
    ds = stage_data(run)
    log(f"data: {ds!r}")
    ex = make_executor(run.cfg, run.dir)
    try:
        for stage in stages:
            stage(run, ds, progress, ex)
    finally:
        ex.close()
    t0 = time.perf_counter()
    summary = report(run, ds)
    run.stage_done("report", time.perf_counter() - t0)
    run.finished(time.perf_counter() - t_all)
    return summary
