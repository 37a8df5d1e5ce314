"""``make demo``: scan a sample bucket on an embedded S3 server (moto) and show the result.

Starts moto's server on a free loopback port, creates ``demo-bucket`` with a small imaging
archive (DICOM studies and series, NIfTI volumes, PNGs, side files, a few awkward keys), runs
``scanner scan`` exactly as a user would (a subprocess configured by the standard AWS variables),
and prints what it wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / ".demo"
BUCKET = "demo-bucket"


def sample_keys() -> list[str]:
    keys = []
    for study in range(1, 4):
        for series in range(1, 3):
            for instance in range(1, 6):
                keys.append(f"archive/study{study:03d}/series{series:03d}/{instance:04d}.dcm")
        keys.append(f"archive/study{study:03d}/report.txt")
    keys += [
        "archive/study002/series002/",  # a folder marker
        "volumes/brain01.nii.gz",
        "volumes/brain02.nii",
        "photos/chest xray (1).png",
        "photos/résumé-😀.jpg",
        "photos/.DS_Store",
        "manifest.json",
    ]
    return keys


def main() -> int:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    try:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="demo",
            aws_secret_access_key="demo-secret",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        for key in sample_keys():
            client.put_object(
                Bucket=BUCKET, Key=key, Body=b"" if key.endswith("/") else b"demo " + key.encode()
            )
        print(f"demo: S3 server at {endpoint}, bucket s3://{BUCKET} holds {len(sample_keys())} objects\n")

        OUT_DIR.mkdir(exist_ok=True)
        return run_and_show(
            ["scan", f"s3://{BUCKET}", "-o", str(OUT_DIR / "objects.jsonl")], env, OUT_DIR / "objects.jsonl"
        )
    finally:
        server.stop()


def run_and_show(args: list[str], env: dict[str, str], output: Path) -> int:
    print("$ scanner " + " ".join(args))
    result = subprocess.run([sys.executable, "-m", "scanner", *args], env=env, check=False)
    if result.returncode != 0:
        return result.returncode
    print(f"\n{output.relative_to(REPO_ROOT)}:")
    print(output.read_text(encoding="utf-8"), end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
