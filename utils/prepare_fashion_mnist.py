"""Export Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist) as an ImageFolder.

    python utils/prepare_fashion_mnist.py --output data/fashion_mnist --image_size 32 \
        --train_per_class 500 --val_per_class 100
    # the shared ground truth's subsets (benchmarks/consistency.py):
    python utils/prepare_fashion_mnist.py --output data/fmnist_gt --train_per_class 2000 \
        --val_per_class 500 --subset_seeds 0 1 --pad_value 73

Writes ``OUT/train/<class>/*.png`` and ``OUT/val/<class>/*.png`` (RGB), the layout that
``train_supernet.py`` and ``eval_supernet.py`` read.  A finished export with the same
settings is kept; an interrupted one is redone.
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.data import FASHION_MNIST_DIR, export_fashion_mnist  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--train_per_class", type=int, default=None, help="default: all 6,000")
    parser.add_argument("--val_per_class", type=int, default=None, help="default: all 1,000")
    parser.add_argument("--source", default=FASHION_MNIST_DIR)
    parser.add_argument("--subset_seeds", type=int, nargs=2, metavar=("TRAIN", "VAL"),
                        help="draw the per-class images with RandomState(seed).choice instead of "
                             "taking the first ones (the shared ground truth uses 0 1)")
    parser.add_argument("--pad_value", type=int, help="pad 28 px to --image_size with this grey level "
                                                      "instead of resizing (73 = the normalised zero "
                                                      "of mean 0.286)")
    args = parser.parse_args(argv)
    settings = os.path.join(args.output, "export.txt")
    wanted = f"image_size={args.image_size} train_per_class={args.train_per_class} " \
             f"val_per_class={args.val_per_class}"
    for name in ("subset_seeds", "pad_value"):
        if getattr(args, name) is not None:
            wanted += f" {name}={getattr(args, name)}"
    wanted += "\n"
    if os.path.exists(args.output):
        if os.path.isfile(settings) and open(settings).read() == wanted:
            print(f"{args.output}: already exported ({wanted.strip()})")
            return
        sys.exit(f"{args.output} already exists and is not a Fashion-MNIST export with {wanted.strip()}; "
                 f"choose another --output")
    # Export beside the target and rename at the end, so an interrupted run leaves no half folder.
    partial = args.output.rstrip("/") + ".partial"
    if os.path.isdir(partial):
        shutil.rmtree(partial)
    export_fashion_mnist(partial, args.image_size, args.train_per_class, args.val_per_class, args.source,
                         subset_seeds=args.subset_seeds, pad_value=args.pad_value)
    with open(os.path.join(partial, "export.txt"), "w") as f:
        f.write(wanted)
    os.replace(partial, args.output)
    print(f"{args.output}: exported Fashion-MNIST ({wanted.strip()})")

if __name__ == "__main__":
    main()
