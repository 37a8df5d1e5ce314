"""Side-by-side listing benchmarks against real S3 servers (``make bench``)."""
