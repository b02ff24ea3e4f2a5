"""
The Artcast benchmarks (not installed with Artcast).  See docs/performance.md.
"""
