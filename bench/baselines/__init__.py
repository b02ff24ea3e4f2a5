"""
Re-implementations of other designs, measured against Artcast.
"""
