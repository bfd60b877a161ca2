"""Classifier lab: LeNet-5 against a smaller network of our own, with learning curves and PCA / t-SNE of
the activations of a conv layer, the fully-connected layer and the output layer.

    python labs/classifier.py             # -> labs/results/classifier/
    python labs/classifier.py --dry-run   # a few steps on a small subset (a smoke test)

Training reuses the grading classifier's loss (cross-entropy + accuracy) and the project's one training loop;
curves show train vs held-out (the 10 000 validation images) per epoch; test accuracy is reported at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import nn

from vaekit.classifier import classifier_loss
from vaekit.cli import HelpFormatter, add_run_flags, setup_run
from vaekit.paths import ROOT
from vaekit.settings import FitSettings
from vaekit.training_loop import evaluate, fit

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

LAYERS = ("conv", "fc", "output")  # activations we project, named in each net


class LeNet5(nn.Module):
    """LeCun et al. (1998): conv 6@5×5 – pool – conv 16@5×5 – pool – 120 – 84 – 10 (ReLU, max-pooling)."""

    def __init__(self, c1: int = 6, c2: int = 16, fc: tuple[int, ...] = (120, 84)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))  # 28 -> 14
        self.conv = nn.Sequential(nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())  # 14 -> 5
        dims = (c2 * 25, *fc)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.fc = nn.Sequential(*layers)
        self.output = nn.Linear(dims[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.fc(self.conv(self.conv1(x.reshape(-1, 1, 28, 28)))))


def small_net() -> LeNet5:
    """Our smaller network: the same shape with 4 and 8 filters and one 32-unit layer (about 7 % of LeNet-5)."""
    return LeNet5(c1=4, c2=8, fc=(32,))


@torch.no_grad()
def activations(model: LeNet5, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the named layers, captured with forward hooks."""
    model.eval()
    acts: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: acts.__setitem__(name, out.flatten(1))) for name in LAYERS]
    model(x)
    for h in hooks:
        h.remove()
    return acts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=int, default=8, help="epochs per network")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--points", type=int, default=1500, help="test images projected with PCA and t-SNE")
    add_run_flags(p, out_default=str(ROOT / "labs" / "results" / "classifier"),
                  seed_help="seed for weights, shuffling and t-SNE")
    args = p.parse_args(argv)

    run = setup_run(args)
    device, train, valid, test, max_steps = run.device, run.train, run.valid, run.test, run.max_steps
    points = 200 if args.dry_run else args.points
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    nets = {"LeNet-5": LeNet5, "small": small_net}
    histories, numbers, models = {}, {}, {}
    for name, build in nets.items():
        torch.manual_seed(args.seed)
        model = build()
        result = fit(model, classifier_loss, train, valid,
                     FitSettings(args.epochs, args.lr, args.batch_size, args.seed, device, max_steps=max_steps,
                                 desc=name))
        models[name] = model.cpu().eval()
        histories[name] = result.history
        test_metrics = evaluate(models[name], classifier_loss, test, 1000, torch.device("cpu"))
        numbers[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                         "epochs": result.epochs_run, "train_seconds": round(result.seconds, 1),
                         "test_accuracy": test_metrics["accuracy"], "test_loss": test_metrics["loss"]}

    # -- learning curves ------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        for ax, term in zip(axes, ("loss", "accuracy")):
            ax.plot(ep, [h[f"train_{term}"] for h in hist], "o-", label=f"{name} train")
            ax.plot(ep, [h[f"valid_{term}"] for h in hist], "s--", label=f"{name} held-out")
            ax.set_title(term)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)

    # -- PCA and t-SNE of three layers, one figure per net --------------------------------------------
    x, y = test.x[:points], test.y[:points].numpy()
    for name, model in models.items():
        acts = activations(model, x)
        fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
        for col, layer in enumerate(LAYERS):
            a = acts[layer].numpy()
            for row, (method, proj) in enumerate((
                    ("PCA", PCA(n_components=2, random_state=args.seed)),
                    ("t-SNE", TSNE(n_components=2, init="pca", perplexity=min(30, len(a) // 4),
                                   max_iter=500, random_state=args.seed)))):
                # torch and scikit-learn each bring an OpenMP runtime; left alone they spin against each
                # other and t-SNE slows to a crawl. One thread for scikit-learn avoids it.
                with threadpool_limits(1):
                    xy = proj.fit_transform(a)
                ax = axes[row, col]
                sc = ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="tab10", s=3)
                ax.set_title(f"{method} of {layer} ({a.shape[1]}-d)")
                ax.set_xticks([])
                ax.set_yticks([])
        fig.colorbar(sc, ax=axes, ticks=range(10), label="digit")
        fig.suptitle(f"{name}: activations of {points} test images")
        slug = name.lower().replace("-", "")
        fig.savefig(out / f"projections_{slug}.png", dpi=110)
        plt.close(fig)

    (out / "results.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps(numbers, indent=2))
    print(f"wrote {out}/learning_curves.png, projections_lenet5.png, projections_small.png, results.json")


if __name__ == "__main__":
    main()
