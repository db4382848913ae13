"""The wire formats: v2 (Open Inference Protocol, JSON and binary tensors) and v1 predict.

`schema` documents them as pydantic models; `v2_decode`, `v2_encode` and `v1` are the fast
codecs the routes use.
"""
