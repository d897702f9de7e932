"""Machinery of the checkout shared by tests and benchmarks (synthetic tables, the search oracle,
the policy's random walks); not part of the installed package."""
