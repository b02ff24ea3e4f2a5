"""
Feeds: what puts datums into the store.
"""
