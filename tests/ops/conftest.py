# Run only on request (see their docstrings): not test modules, and importing them has effects
# (switching Triton's interpreter on, or demanding a GPU) that the doctest collector must not cause.
collect_ignore = ["triton_kernel_checks.py", "cuda_checks.py"]
