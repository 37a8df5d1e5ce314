"""Real S3 servers started and stopped by the test suite and the benchmarks."""
