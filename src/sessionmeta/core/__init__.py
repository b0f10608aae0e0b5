"""The pure core: model specs, values and their codec, filters, plans, versions, scopes.

No I/O, no dialect, no SQLAlchemy: everything here is plain Python over Pydantic.
"""
