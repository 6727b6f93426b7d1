"""Linear algebra on Hessian-vector products: Lanczos, SLQ and MINRES batched over K models
(:mod:`.lanczos`), and the full-batch Hessian of a data set as an operator (:mod:`.hessian`)."""
