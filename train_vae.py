"""Train the unconditional VAE -> VAEwolabel/{epoch.pth, hyperparameters.txt} plus figures.

    python train_vae.py                 # defaults: about 3 minutes on 2 CPU cores
    python train_vae.py --latent-dim 8 --epochs 20 --var 0.02
    python train_vae.py --dry-run       # 5 steps on 512 images, a smoke test
"""

from __future__ import annotations

from vaekit.experiment import parse_config, run

# Defaults chosen for 2 CPU cores and the course score (10/10 needs sharp reconstructions at small latent_dim).
DEFAULTS = dict(epochs=10, latent_dim=16, lr=2e-3, batch_size=128, var=0.01)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config("vae", __doc__.splitlines()[0], argv, **DEFAULTS)
    run("vae", cfg)


if __name__ == "__main__":
    main()
