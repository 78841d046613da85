"""hash-file: the hex digest of a file.

Deterministic: the output depends only on the file's bytes and the algorithm.
"""

import argparse
import hashlib
import os
import sys

OUTPUT_DIR = "/tmp/workflow_space/hash-file"


def digest_of(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description="Write the hex digest of a file.")
    parser.add_argument("--input_file", required=True, type=str, help="path of the file to hash")
    parser.add_argument("--algorithm", default="sha256", type=str, help="hashlib algorithm, default sha256")
    args = parser.parse_args()
    if args.algorithm not in hashlib.algorithms_available:
        print(f"unknown algorithm {args.algorithm!r}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.input_file):
        print(f"input file {args.input_file!r} does not exist", file=sys.stderr)
        return 1
    digest = digest_of(args.input_file, args.algorithm)
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(OUTPUT_DIR, "digest.txt"), "w") as f:
        f.write(digest + "\n")
    print(f"{args.algorithm}({args.input_file}) = {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
