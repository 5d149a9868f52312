"""Fold a train-time TSM (`.keras`) into its deploy-time twin (`.keras`).

    tsm-reparameterize IN.keras OUT.keras [--check]

The output is a TSM built with `backbone_options={"deploy": True}`: every
BatchNormalization is folded into the conv before it, and every MobileOneBlock
is one conv with bias (see `tsm_keras.reparameterize`). `tsm-test` and
`tsm-predict` run this form by themselves. With
`--check` both models run on one random clip in inference mode and the
largest logit difference, relative to the largest train logit, is printed
(and must be <= 1e-4).
"""

import os

from tsm_keras.cli import common

PARITY_BOUND = 1e-4


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-reparameterize", description, epilog=epilog)
    parser.add_argument("source", help="train-time TSM saved with model.save (.keras)")
    parser.add_argument("target", help="where to write the deploy-time TSM (.keras)")
    parser.add_argument("--check", action="store_true", help="compare the logits of both models on a random clip")
    return parser


def relative_logit_difference(train, deploy, seed=0):
    """max |train - deploy| / max |train| on one random clip, inference mode."""
    import keras
    import numpy as np

    shape = (1,) + tuple(train.input_shape[1:])
    clip = np.random.default_rng(seed).normal(size=shape).astype("float32")
    train_logits = keras.ops.convert_to_numpy(train(clip, training=False))
    deploy_logits = keras.ops.convert_to_numpy(deploy(clip, training=False))
    return float(np.abs(train_logits - deploy_logits).max() / np.abs(train_logits).max())


def run(args):
    if not args.source.endswith(".keras") or not os.path.isfile(args.source):
        raise common.UsageError(f"{args.source}: expected an existing .keras model file")
    if not args.target.endswith(".keras"):
        raise common.UsageError(f"{args.target}: the output must be a .keras file")
    import tsm_keras
    from tsm_keras.models import ModelFileError, count_params, load_tsm

    try:
        train = load_tsm(args.source)
    except ModelFileError as error:
        raise common.UsageError(error) from None
    try:
        deploy = tsm_keras.reparameterize(train)
    except ValueError as error:
        raise ValueError(f"{args.source}: {error}") from None
    deploy.save(args.target)
    print(
        f"{args.source} -> {args.target}: {train.backbone}, "
        f"{len(train.layers)} -> {len(deploy.layers)} layers, "
        f"{count_params(train):,} -> {count_params(deploy):,} params"
    )
    if args.check:
        difference = relative_logit_difference(train, deploy)
        print(f"max |train - deploy| / max |train| = {difference:.2e}")
        if not difference <= PARITY_BOUND:
            raise RuntimeError(f"parity check failed: {difference:.2e} > {PARITY_BOUND:.0e}")


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
