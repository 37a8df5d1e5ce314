"""bucket-scanner: list an S3 bucket fast, exactly once, in key order."""

__version__ = "0.1.0"
