"""thermokern's Triton kernels and their launchers, one module per op (``<op>.py``).

This top-level folder is installed as the subpackage ``thermokern.kernels`` (pyproject.toml
maps it with ``package-dir``), so the kernels are imported as ``thermokern.kernels.<op>``.
They import nothing from the rest of thermokern: each launcher takes the tensors and scalars
of its schema in csrc/thermokern.cpp, in that order, and ``thermokern._dispatch.KernelOp``
wraps it into the ``thermokern::<name>_triton`` op on first use. Importing this package does
not import triton; importing a module of it does.
"""
