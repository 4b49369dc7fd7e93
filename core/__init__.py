"""gentool core library: solvers, diffusion, MonoFlow, probability-space optimisers, MAD loops, metrics.

Pure functions and small dataclasses. No printing, no global state; devices, dtypes and
`torch.Generator`s are passed in explicitly. Progress is reported through callbacks.
"""

from gentool.core.errors import BadInput, GentoolError, Interrupted, NumericalFailure, StorageError

__all__ = ["BadInput", "GentoolError", "Interrupted", "NumericalFailure", "StorageError"]
