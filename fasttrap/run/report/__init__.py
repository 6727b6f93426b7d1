"""report.md of each analysis: one module per analysis, one function per section (markdown only).

:mod:`.traps` (the trapping-time analysis), :mod:`.aging` (aging and diffusion), :mod:`.spectra` (Jacobian and
Hessian ESDs, real against random labels), :mod:`.common`.
"""
