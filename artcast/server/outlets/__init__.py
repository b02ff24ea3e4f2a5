"""
Outlets: what takes datums out of the store, to HTTP clients (long polls,
streams, pages) and to other servers.
"""
