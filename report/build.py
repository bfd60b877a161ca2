"""Build report/report.pdf from the saved checkpoints and result files (seconds; no training).

    python report/build.py
    python report/build.py --results-dir tests/fixtures   # compile against other result files

Figures (latent map, interpolation, sweep curves, the samples-vs-reconstructions ceiling) are drawn from
VAEwolabel/, Genwithlabel/, report/results/sweeps.json and bench/results.json; the Typst source reads every
number from the JSON files (no copied numbers).
report/build_info.json records the sha256 of each input so pack.py can tell a stale report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from vaekit import checkpoint, plots
from vaekit.course import load_model
from vaekit.data import load_mnist
from vaekit.paths import ROOT

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

REPORT = ROOT / "report"


@torch.no_grad()
def latent_map(vae, path: Path) -> None:
    """Test-set codes of the VAE projected to 2-D with PCA, coloured by digit."""
    from sklearn.decomposition import PCA

    test = load_mnist("test").subset(5000)
    mu, _ = vae.encode_latent(test.x)
    xy = PCA(n_components=2, random_state=0).fit_transform(mu.numpy())
    fig, ax = plt.subplots(figsize=(5, 4.2))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=test.y.numpy(), cmap="tab10", s=3, alpha=0.7)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_title("VAE latent codes of 5 000 test images (PCA)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


@torch.no_grad()
def interpolation(vae, path: Path, steps: int = 10) -> None:
    """Rows: linear paths in the VAE's latent space between test digits c and c+1."""
    test = load_mnist("test")
    first = [int((test.y == c).nonzero()[0]) for c in range(10)]
    rows = []
    for c in range(9):
        mu, _ = vae.encode(test.x[[first[c], first[c + 1]]])
        t = torch.linspace(0, 1, steps).unsqueeze(1)
        rows.append(vae.decode((1 - t) * mu[0] + t * mu[1]))
    plots.save_grid(torch.cat(rows), path, nrow=steps)


def sweep_figure(sweeps: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    handles = []
    for ax, name in ((axes[0], "latent_dim"), (axes[1], "var")):
        runs = sweeps["sweeps"][name]
        xs = [r[name] for r in runs]
        handles = ax.plot(xs, [r["score"] for r in runs], "o-", label="course VAE score (/10)")
        handles += ax.plot(xs, [r["mse"] * 100 for r in runs], "^:", label="recon MSE × 100")
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
        # fid_ratio spans orders of magnitude: its own log axis.
        twin = ax.twinx()
        handles += twin.plot(xs, [r["fid_ratio"] for r in runs], "s--", color="tab:red", label="fid_ratio (right)")
        twin.set_yscale("log")
        twin.tick_params(axis="y", colors="tab:red")
    axes[0].legend(handles=handles, fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def ceiling_figure(bench: dict, path: Path) -> None:
    """fid_ratio of each benchmark model's samples beside that of its reconstructions (the decoder's ceiling)."""
    rows = [r for r in bench["rows"] if r.get("fid_ratio_recon") is not None and r.get("fid_ratio") is not None]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    names = [f"{r['model']} ({r['task']})".replace("default conv", "default") for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["fid_ratio"] for r in rows], 0.4, label="samples (prior + decoder)")
    ax.bar([x + 0.2 for x in xs], [r["fid_ratio_recon"] for r in rows], 0.4,
           label="reconstructions of training images (decoder alone)")
    ax.axhline(1.0, color="k", lw=0.8, ls=":", label="real images = 1")
    ax.set_yscale("log")
    ax.set_ylabel("fid_ratio (log)")
    ax.set_xticks(list(xs), names, rotation=25, ha="right", fontsize=7)
    ax.legend(fontsize=7)
    if not rows:
        ax.text(0.5, 0.5, "no benchmark row has a reconstruction fid_ratio yet", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results-dir", default=str(ROOT), help="folder holding VAEwolabel/, Genwithlabel/, "
                   "bench/results.json and report/results/sweeps.json (must lie inside the project)")
    p.add_argument("--out", default=str(REPORT / "report.pdf"), help="PDF to write")
    p.add_argument("--skip-figures", action="store_true", help="reuse the figures already in report/figures/")
    args = p.parse_args(argv)
    import typst

    base = Path(args.results_dir).resolve()
    if not base.is_relative_to(ROOT):
        p.error("--results-dir must lie inside the project (Typst reads files under its root only).")
    inputs = {
        "vae": base / "VAEwolabel" / "grade_result.json",
        "gen": base / "Genwithlabel" / "grade_result.json",
        "vae_hp": base / "VAEwolabel" / "hyperparameters.txt",
        "gen_hp": base / "Genwithlabel" / "hyperparameters.txt",
        "bench": base / "bench" / "results.json",
        "sweeps": base / "report" / "results" / "sweeps.json",
    }
    missing = [str(v.relative_to(ROOT)) for v in inputs.values() if not v.is_file()]
    if missing:
        p.exit(1, "report/build.py: missing " + ", ".join(missing) + " (train, grade, run bench/run.py and "
               "report/experiments.py first)\n")

    figs = base / "report" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    if not args.skip_figures:
        vae, _ = load_model(base / "VAEwolabel")
        latent_map(vae, figs / "latent_map.png")
        interpolation(vae, figs / "interpolation.png")
        sweep_figure(json.loads(inputs["sweeps"].read_text()), figs / "sweeps.png")
        ceiling_figure(json.loads(inputs["bench"].read_text()), figs / "ceiling.png")
    rel = {k: "/" + v.relative_to(ROOT).as_posix() for k, v in inputs.items()}
    rel["vae_dir"] = "/" + (base / "VAEwolabel").relative_to(ROOT).as_posix()
    rel["gen_dir"] = "/" + (base / "Genwithlabel").relative_to(ROOT).as_posix()
    rel["figs_dir"] = "/" + figs.relative_to(ROOT).as_posix()
    labs = ROOT / "labs" / "results"
    if all((labs / lab / "results.json").is_file() for lab in ("autoencoder", "classifier")):
        rel["labs_dir"] = "/labs/results"  # the appendix shows the side labs once they have been run
    for lab in ("latent_space", "adain"):  # the two image labs, once they have been run
        if (labs / lab / "results.json").is_file():
            rel[f"{lab}_dir"] = f"/labs/results/{lab}"
    if (labs / "cgan" / "Genwithlabel" / "samples.png").is_file():
        rel["cgan_samples"] = "/labs/results/cgan/Genwithlabel/samples.png"
    out = Path(args.out)
    typst.compile(str(REPORT / "report.typ"), output=str(out), root=str(ROOT), sys_inputs=rel)
    info = {"inputs": {str(v.relative_to(ROOT)): checkpoint.file_sha256(v) for v in inputs.values()}}
    if out.resolve() == (REPORT / "report.pdf").resolve():
        (REPORT / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
