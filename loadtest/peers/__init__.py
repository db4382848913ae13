"""Optional peers: what a user would run instead of exitserve, each in its own virtualenv.

Modules here that end in `_peer` run inside the peer's virtualenv, so they import nothing
from this project beyond the standard library, numpy and onnxruntime.
"""
