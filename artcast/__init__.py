"""
Artcast: push live data from multicast sources to anything that speaks HTTP.

Sources send datums (a key and a JSON value) as UDP multicast datagrams; the
server (C{twistd artcast}) holds HTTP requests open and answers each with the
next datum for its key.
"""

__version__ = "0.1.0"
