"""Write the weights of the tiny random test models (test-tiny-rn, test-tiny-vit) into DIR.

They have CLIP's architectures (a modified ResNet with attention pooling, a ViT with patch 32)
at toy sizes with random weights, stored like real weights, so that tests, benchmarks and smoke
checks run the real loading code without downloading anything: point `--clip-weights` (or
CLIPASSO_WEIGHTS) at DIR and pick the models test-tiny-rn and test-tiny-vit. The output is the
same, byte for byte, on every run.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """DIR, created when missing."""
    parser.add_argument("dir", metavar="DIR", help="directory to write the weight files into")


def run(args: argparse.Namespace) -> int:
    """Write the files and list them."""
    from clipasso_server.engine.clip_models import write_test_weights

    for path in write_test_weights(args.dir):
        print(path)
    return 0
