"""Load generators and benchmarks for exitserve."""
