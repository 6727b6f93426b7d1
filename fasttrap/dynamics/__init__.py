"""The descents: outer SGD (the training path θ_t) and the batched inner descents on G = ½‖∇L‖²."""
