"""The I/O layer: the database seam (``database``) and what runs on it.

Only ``database`` (with ``drivers``) touches connections; the store, search,
atomic operations, scoped views and check call its public methods.
"""
