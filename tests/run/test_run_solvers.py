"""The main job runs every solver of fasttrap.dynamics.solvers: inner.method = newton_mr end to end."""

from __future__ import annotations

import numpy as np

from test_run import TINY, run_cmd


def test_the_main_job_runs_newton_mr_with_its_settings_and_resumes(tmp_path):
    import fasttrap
    from fasttrap.dynamics.newton import newton_mr
    from fasttrap.run import rundir as rundir_mod
    from fasttrap.run.stages.data import mlp_of

    out = tmp_path / "run"
    args = ["--out", str(out), "--no-progress", *TINY, "--set", "window.stop=8", "--set", "certify.enabled=false",
            "--set", "data.train_rows=1000", "--set", "inner.method=newton_mr", "--set", "inner.checkpoints=[]",
            "--set", "inner.epochs=2", "--set", "inner.newton_mr.minres_iters=8",
            "--set", "inner.newton_mr.geodesic=true"]
    r = run_cmd(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "newton_mr.geodesic = true" in (out / "config.toml").read_text()
    rd = fasttrap.open_run(out)
    cfg, run = rd.config, rd.run()
    assert cfg["inner.method"] == "newton_mr" and cfg["inner.newton_mr.minres_iters"] == 8
    main = rundir_mod.inner_results(run)
    assert main["theta"].dtype == np.float64 and main["steps_done"].max() <= 2      # epochs count iterations
    # the endpoints are Newton-MR's from the start points, with the settings given
    ds = fasttrap.model.data.load("mnist", normalize=cfg["data.normalize"]).subset(1000)
    th0 = rd.start_points[:5]
    d = newton_mr(mlp_of(cfg), th0, ds.X_train.astype(np.float64), ds.y_train, steps=2, G_tol=cfg["inner.G_tol"],
                  growth=cfg["inner.growth"], minres_iters=8, geodesic=True)
    np.testing.assert_array_equal(main["theta"][:5], d["theta"])
    manifest = run.manifest["stages"]["inner"]
    assert manifest["model_steps"] == int(main["steps_done"].sum()) > 0
    again = run_cmd(["--resume", str(out), "--no-progress"])
    assert again.returncode == 0, again.stderr[-3000:]
    np.testing.assert_array_equal(rundir_mod.inner_results(fasttrap.open_run(out).run())["theta"], main["theta"])
