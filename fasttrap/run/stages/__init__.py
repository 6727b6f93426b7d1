"""The stages of each analysis of the main job, one module per analysis (same shape: ``execute(run, progress)``)."""
