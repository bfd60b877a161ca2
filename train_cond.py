"""Train the conditional generator -> Genwithlabel/{epoch.pth, hyperparameters.txt} plus figures.

    python train_cond.py                # defaults: about 5 minutes on 2 CPU cores
    python train_cond.py --latent-dim 8 --prior-shrink 1.0
    python train_cond.py --dry-run      # 5 steps on 512 images, a smoke test
"""

from __future__ import annotations

from vaekit.experiment import parse_config, run

# Defaults chosen for 2 CPU cores: conditional accuracy needs a sharp decoder (small var) and a prior fitted
# to its codes (a 10-Gaussian mixture per digit, std shrunk 5 %).
DEFAULTS = dict(epochs=20, latent_dim=16, lr=2e-3, batch_size=128, var=0.003, prior_shrink=0.95)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config("gen", __doc__.splitlines()[0], argv, **DEFAULTS)
    run("gen", cfg)


if __name__ == "__main__":
    main()
