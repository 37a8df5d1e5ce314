"""``make demo``: scan a sample bucket on an embedded S3 server (moto) and show the result.

Starts moto's server on a free loopback port, creates ``demo-bucket`` with a small imaging
archive (DICOM studies and series, NIfTI volumes, PNGs, side files, a few awkward keys), runs
``scanner scan`` exactly as a user would (a subprocess configured by the standard AWS variables)
twice, for JSON Lines of every object and for a RedBrick AI items list of the DICOM series, and
prints the start of each output. The server's access log stays quiet: the only lines on stderr
are the scanner's own.

    python scripts/demo.py [--out DIR]   (default: .demo in the repository)
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / ".demo"
BUCKET = "demo-bucket"
EXCERPT_LINES = 8


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scan a sample bucket on an embedded S3 server")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where the outputs go (default .demo)")
    out_dir: Path = parser.parse_args(argv).out

    # moto's server logs every request through werkzeug, at INFO, on stderr.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
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
        "PYTHONPATH": str(REPO_ROOT),
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

        out_dir.mkdir(parents=True, exist_ok=True)
        objects, items = out_dir / "objects.jsonl", out_dir / "items.json"
        code = run_and_show(["scan", f"s3://{BUCKET}", "-o", str(objects)], env, objects)
        if code != 0:
            return code
        return run_and_show(
            ["scan", f"s3://{BUCKET}/archive/", "--format", "items", "--type", "dicom", "-o", str(items)],
            env,
            items,
        )
    finally:
        server.stop()


def run_and_show(args: list[str], env: dict[str, str], output: Path) -> int:
    print("$ scanner " + " ".join(_shown(arg) for arg in args), flush=True)
    result = subprocess.run([sys.executable, "-m", "scanner", *args], env=env, check=False)
    if result.returncode != 0:
        return result.returncode
    lines = output.read_text(encoding="utf-8").splitlines()
    print(f"\n{_shown(str(output))} (first {min(len(lines), EXCERPT_LINES)} of {len(lines)} lines):")
    for line in lines[:EXCERPT_LINES]:
        print(line)
    if len(lines) > EXCERPT_LINES:
        print("...")
    print(flush=True)
    return 0


def _shown(path: str) -> str:
    """Paths inside the repository relative to it, the way a user would type them."""
    try:
        return str(Path(path).relative_to(REPO_ROOT))
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
