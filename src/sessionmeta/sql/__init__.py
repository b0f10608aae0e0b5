"""SQL builders: tables, the one backend registry, statements and query plans.

Builds and compiles statements with SQLAlchemy Core; awaits nothing.
"""
