"""Build report/report.pdf (and report/labs.pdf) from the saved checkpoints and result files (seconds).

    python report/build.py
    python report/build.py --results-dir tests/fixtures   # compile against other result files

Figures are drawn from VAEwolabel/, Genwithlabel/, report/results/*.json (report/experiments.py) and
bench/results.json; the Typst source reads every number from those files and the authors and feedback from
report/student.toml. report/build_info.json records the sha256 of each input and the student fields still
unfilled, so pack.py can refuse a stale or unfinished report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from vaekit import checkpoint, plots
from vaekit.cli import HelpFormatter
from vaekit.course import load_model
from vaekit.data import load_mnist
from vaekit.paths import ROOT
from vaekit.student import StudentFileError, read_student, unfilled

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

REPORT = ROOT / "report"
EXPERIMENTS = {"q1": "q1", "q2": "q2", "gen_experiment": "gen", "label_swap": "label_swap"}  # Typst key: file


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
    """Rows: straight lines in the decoder's own z-space between the encoder means of test digits c and c+1
    (``encode_latent`` / ``decode_latent``: the fitted prior's noise map is not involved)."""
    test = load_mnist("test")
    first = [int((test.y == c).nonzero()[0]) for c in range(10)]
    rows = []
    for c in range(9):
        mu, _ = vae.encode_latent(test.x[[first[c], first[c + 1]]])
        t = torch.linspace(0, 1, steps).unsqueeze(1)
        rows.append(vae.decode_latent((1 - t) * mu[0] + t * mu[1]))
    plots.save_grid(torch.cat(rows), path, nrow=steps)


def sweep_figure(q1: dict, path: Path) -> None:
    """Course score and fid ratio (mean ± std over seeds) against each Q1 setting."""
    knobs = (("lr", "learning rate"), ("latent_dim", "latent size d"), ("var", "decoder variance σ_x²"))
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.0))
    twins = []
    for ax, (knob, label) in zip(axes, knobs):
        rows = q1["sweeps"][knob]
        xs = [r[knob] for r in rows]
        ax.errorbar(xs, [r["score"]["mean"] for r in rows], [r["score"]["std"] for r in rows], fmt="o-",
                    capsize=3, label="course score (/10)")
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(label, fontsize=10)
        ax.grid(alpha=0.3)
        twins.append(ax.twinx())
        twins[-1].errorbar(xs, [r["fid_ratio"]["mean"] for r in rows], [r["fid_ratio"]["std"] for r in rows],
                           fmt="s--", color="tab:red", capsize=3, label="fid ratio (right, log)")
        twins[-1].set_yscale("log")
        twins[-1].tick_params(axis="y", colors="tab:red")
    handles = axes[0].get_legend_handles_labels()[0] + twins[0].get_legend_handles_labels()[0]
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=2, frameon=False)
    axes[0].set_ylabel("course score")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def loss_figure(folders: dict[str, Path], path: Path) -> None:
    """Validation loss and its KL term per epoch, one panel per model; sharpening epochs shaded."""
    fig, axes = plt.subplots(1, len(folders), figsize=(10, 3.0))
    for ax, (title, folder) in zip(axes, folders.items()):
        history = json.loads((folder / "history.json").read_text())
        vae = history["vae"] if isinstance(history, dict) else history
        sharp = history.get("sharpen", []) if isinstance(history, dict) else []
        epochs = [h["epoch"] for h in vae]
        ax.plot(epochs, [h["valid_loss"] for h in vae], "o-", label="validation loss")
        ax.plot(epochs, [h["train_loss"] for h in vae], "o:", label="training loss")
        ax.plot(epochs, [h["valid_kl"] for h in vae], "^-", label="validation KL term")
        if sharp:
            more = [len(vae) + h["epoch"] for h in sharp]
            ax.axvspan(len(vae) + 0.5, more[-1] + 0.5, color="0.9")
            ax.plot(more, [h["valid_recon"] for h in sharp], "s-", color="tab:purple",
                    label="validation reconstruction term (sharpening)")
        ax.set_yscale("log")
        ax.set_xlabel("epoch", fontsize=10)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def swap_figure(swap: dict, path: Path) -> None:
    """Share classified as the requested label: rows the digit whose prior drew the code, columns the label."""
    fig, ax = plt.subplots(figsize=(4.6, 3.9))
    im = ax.imshow([[100 * v for v in row] for row in swap["prior"]], cmap="Blues", vmin=0, vmax=100)
    for c, row in enumerate(swap["prior"]):
        for y, v in enumerate(row):
            ax.text(y, c, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.5 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("label y given to the decoder")
    ax.set_ylabel("digit c whose prior drew z")
    fig.colorbar(im, ax=ax, label="% classified as y")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
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
                                formatter_class=HelpFormatter)
    p.add_argument("--results-dir", default=str(ROOT), help="folder holding VAEwolabel/, Genwithlabel/, "
                   "bench/results.json and report/results/*.json (must lie inside the project)")
    p.add_argument("--student", default=str(REPORT / "student.toml"),
                   help="the group's details: group, authors, hours spent, feedback")
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
        **{key: base / "report" / "results" / f"{name}.json" for key, name in EXPERIMENTS.items()},
    }
    missing = [str(v.relative_to(ROOT)) for v in inputs.values() if not v.is_file()]
    if missing:
        p.exit(1, "report/build.py: missing " + ", ".join(missing) + " (train, grade, run bench/run.py and "
               "report/experiments.py first)\n")
    try:
        student = read_student(args.student)
    except StudentFileError as e:
        p.exit(1, f"report/build.py: {e}\n")
    todo = unfilled(student)

    figs = base / "report" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    if not args.skip_figures:
        vae, _ = load_model(base / "VAEwolabel")
        latent_map(vae, figs / "latent_map.png")
        interpolation(vae, figs / "interpolation.png")
        loss_figure({"VAE": base / "VAEwolabel", "GenModel": base / "Genwithlabel"}, figs / "loss.png")
        sweep_figure(json.loads(inputs["q1"].read_text()), figs / "sweeps.png")
        swap_figure(json.loads(inputs["label_swap"].read_text()), figs / "label_swap.png")
        ceiling_figure(json.loads(inputs["bench"].read_text()), figs / "ceiling.png")
    rel = {k: "/" + v.relative_to(ROOT).as_posix() for k, v in inputs.items()}
    rel["vae_dir"] = "/" + (base / "VAEwolabel").relative_to(ROOT).as_posix()
    rel["gen_dir"] = "/" + (base / "Genwithlabel").relative_to(ROOT).as_posix()
    rel["figs_dir"] = "/" + figs.relative_to(ROOT).as_posix()
    rel["student"] = json.dumps(student)
    out = Path(args.out)
    typst.compile(str(REPORT / "report.typ"), output=str(out), root=str(ROOT), sys_inputs=rel)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    if todo:
        print(f"report/build.py: {Path(args.student).name} still has {', '.join(todo)} to fill in; the PDF shows "
              "FILL IN there, and pack.py will not pack it until you do.")
    if out.resolve() == (REPORT / "report.pdf").resolve():
        student_file = Path(args.student).resolve()
        tracked = {**inputs, **({"student": student_file} if student_file.is_relative_to(ROOT) else {})}
        info = {"inputs": {str(v.relative_to(ROOT)): checkpoint.file_sha256(v) for v in tracked.values()},
                "unfilled": todo}
        (REPORT / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        build_labs(typst, rel)


def build_labs(typst, rel: dict[str, str]) -> None:
    """report/labs.pdf: the side labs, once they have run (their own report, apart from the course's)."""
    labs = ROOT / "labs" / "results"
    ran = {lab: (labs / lab / "results.json").is_file() for lab in ("autoencoder", "classifier", "latent_space",
                                                                     "adain")}
    if not any(ran.values()):
        return
    inputs = {"gen": rel["gen"], "bench": rel["bench"]}
    if ran["autoencoder"] and ran["classifier"]:
        inputs["labs_dir"] = "/labs/results"
    inputs.update({f"{lab}_dir": f"/labs/results/{lab}" for lab in ("latent_space", "adain") if ran[lab]})
    if (labs / "cgan" / "Genwithlabel" / "samples.png").is_file():
        inputs["cgan_samples"] = "/labs/results/cgan/Genwithlabel/samples.png"
    out = REPORT / "labs.pdf"
    typst.compile(str(REPORT / "labs.typ"), output=str(out), root=str(ROOT), sys_inputs=inputs)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
