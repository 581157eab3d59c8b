"""The sweep controller: pure decision code for hyperparameter sweeps (``controller.sweep_step``),
its samplers (``space``, ``bayes``) and early-termination policies (``policies``)."""
