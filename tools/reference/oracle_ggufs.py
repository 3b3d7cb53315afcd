"""Rebuilds the oracle GGUFs that are not committed (their bytes are random quantized blocks and
do not compress), with numpy and gguf-py only, and checks each against the sha256 recorded in
the committed manifest `crates/model/tests/data/oracle/oracle.json`.

    python tools/reference/oracle_ggufs.py --out DIR [--variants q2,q4]

The test suite runs this (scripts/test) so the Rust oracle test can load every variant.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import oracle_gguf as og  # noqa: E402

MANIFEST = os.path.join(HERE, "..", "..", "crates", "model", "tests", "data", "oracle", "oracle.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="q2,q4")
    args = ap.parse_args()
    with open(MANIFEST) as f:
        manifest = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    for name in args.variants.split(","):
        want = manifest["variants"][name]["gguf_sha256"]
        path = os.path.join(args.out, f"oracle-{name}.gguf")
        if os.path.exists(path) and og.sha256_file(path) == want:
            print(f"{path}: up to date")
            continue
        v = og.VARIANTS[name]
        tensors = og.make_tensors(v)
        tmp = path + ".partial"
        og.write_gguf(tmp, v, tensors)
        got = og.sha256_file(tmp)
        if got != want:
            os.remove(tmp)
            raise SystemExit(f"oracle-{name}.gguf: sha256 {got} differs from the manifest's {want}")
        os.replace(tmp, path)
        print(f"{path}: written, sha256 matches the manifest")


if __name__ == "__main__":
    main()
