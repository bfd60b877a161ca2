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

from vaekit import checkpoint, contract, plots
from vaekit.building import load_model
from vaekit.checkpoint import CheckpointError
from vaekit.cli import HelpFormatter
from vaekit.course import TASKS, SubmissionError, load_submission, stale_reason
from vaekit.data import load_mnist
from vaekit.paths import ROOT
from vaekit.student import StudentFileError, read_student, unfilled

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

REPORT = ROOT / "report"
# Typst key: file. The sweeps at the handed-in models' own epochs, and (``_e2``) the short ones over more values.
EXPERIMENTS = {"q1": "q1", "q1_short": "q1_e2", "q2": "q2", "q2_short": "q2_e2", "gen_experiment": "gen",
               "gen_short": "gen_e2", "label_swap": "label_swap"}


# -- the handed-in models, as they are ----------------------------------------------------------------------------


def layer_rows(model: torch.nn.Module) -> list[dict]:
    """Each module that holds parameters of its own: its name, kind (``Linear(784 -> 400)``) and parameter count."""
    rows = []
    for name, m in model.named_modules():
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if own:
            extra = m.extra_repr().split(", bias")[0].replace("in_features=", "").replace("out_features=", "")
            rows.append({"name": name, "kind": f"{type(m).__name__}({extra})", "parameters": own})
    return rows


@torch.no_grad()
def loss_kind(sub, model: torch.nn.Module, var: float) -> str:
    """What the submission's ``vae_loss`` computes, recognised from its value on the model's own outputs for four
    test images: a Gaussian likelihood (squared error over 2·var) or a Bernoulli one (binary cross-entropy), each
    plus the KL term to N(0, I), averaged over the batch (or over images and pixels); else "its own loss"."""
    test = load_mnist("test").subset(4)
    try:
        recon, mu, log_var = model(test.x, test.y)
        value = float(sub.vae_loss(recon, test.x, mu, log_var, var=var))
    except Exception:  # noqa: BLE001 - any failure of the student's code just means we cannot name the loss
        return "its own loss"
    recon = recon.reshape(test.x.shape).clamp(1e-6, 1 - 1e-6)
    kl = float(-0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp()))
    known = {
        f"a Gaussian likelihood of variance {var:g}": float(((recon - test.x) ** 2).sum() / (2 * var)),
        "a Bernoulli likelihood (binary cross-entropy)": float(torch.nn.functional.binary_cross_entropy(
            recon, test.x, reduction="sum")),
    }
    for name, recon_term in known.items():
        for reduce, label in ((4, "averaged over the batch"), (1, "summed over the batch"),
                              (4 * 784, "averaged over images and pixels")):
            if abs(value - (recon_term + kl) / reduce) <= 1e-3 * max(1.0, abs(value)):
                return f"{name} plus the KL term to N(0, I), summed over pixels and latent dimensions and {label}"
    return "its own loss (neither a Gaussian nor a Bernoulli likelihood plus the KL term)"


def describe(folder: Path, sub, task: str) -> tuple[torch.nn.Module, dict]:
    """The model of a course folder and what the report says of it: class, size, layers, loss, prior, extras."""
    model, hp = load_model(folder, sub)
    extras = contract.Extras.of(sub, model)
    training = hp.get("training", {})
    # What the trainer did with the extras ("extras"; a folder from before it was recorded: the kit's settings).
    done = hp.get("extras") or ({"prior": training.get("prior"),
                                 "sharpen": "run" if training.get("sharpen_epochs") else "off"}
                                if extras.kit_model else {})
    var = training.get("var", 0.5)
    fitted = done.get("prior") == "fitted"
    components = hp.get("model_kwargs", {}).get("components")
    return model, {
        "class": TASKS[task].model_class, "latent_dim": hp["model_kwargs"]["latent_dim"],
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "layers": layer_rows(model), "loss": loss_kind(sub, model, var), "var": var, "kit": extras.kit_model,
        "prior": (f"a mixture of {components} Gaussians{' per digit' if task == 'gen' else ''} fitted to the "
                  "training codes" if fitted else "the standard normal N(0, I)"),
        "fitted_prior": fitted, "sharpened": done.get("sharpen") == "run",
        "sample_check": hp.get("sample_check"),
    }


@torch.no_grad()
def codes_and_decoder(model, kit: bool):
    """(encode: images, labels -> codes, decode: codes, labels -> images) in the decoder's own coordinates: the kit's
    ``encode_latent`` / ``decode_latent``, or for any model ``forward``'s ``mu`` and ``decode``."""
    if kit:
        return model.encode_latent, model.decode_latent
    return (lambda x, y: model(x, y)[1]), (lambda z, y: model.decode(z, y).reshape(-1, 1, 28, 28))


@torch.no_grad()
def latent_map(vae, kit: bool, path: Path) -> None:
    """Test-set codes of the VAE projected to 2-D with PCA, coloured by digit."""
    from sklearn.decomposition import PCA

    test = load_mnist("test").subset(5000)
    encode, _ = codes_and_decoder(vae, kit)
    mu = encode(test.x, test.y)
    mu = mu[0] if isinstance(mu, tuple) else mu
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
def interpolation(vae, kit: bool, path: Path, steps: int = 10) -> None:
    """Rows: straight lines in the decoder's own z-space between the encoder means of test digits c and c+1
    (the kit's models: ``encode_latent`` / ``decode_latent``, so the fitted prior's noise map is not involved)."""
    test = load_mnist("test")
    encode, decode = codes_and_decoder(vae, kit)
    first = [int((test.y == c).nonzero()[0]) for c in range(10)]
    rows = []
    for c in range(9):
        idx = [first[c], first[c + 1]]
        mu = encode(test.x[idx], test.y[idx])
        mu = mu[0] if isinstance(mu, tuple) else mu
        t = torch.linspace(0, 1, steps).unsqueeze(1)
        rows.append(decode((1 - t) * mu[0] + t * mu[1], torch.zeros(steps, dtype=torch.long)))
    plots.save_grid(torch.cat(rows), path, nrow=steps)


def sweep_figure(q1: dict, path: Path) -> None:
    """Course score and fid ratio (mean ± std over seeds) against each Q1 setting."""
    knobs = (("lr", "peak learning rate (Adam)"), ("latent_dim", "latent size d (numbers per code)"),
             ("var", "decoder variance σ²_x (pixel², pixels in [0, 1])"))
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
                           fmt="s--", color="tab:red", capsize=3, label="fid ratio of samples (right axis)")
        twins[-1].set_yscale("log")
        twins[-1].tick_params(axis="y", colors="tab:red")
    twins[-1].set_ylabel("fid ratio (log scale; 1 = real digits)", color="tab:red", fontsize=9)
    handles = axes[0].get_legend_handles_labels()[0] + twins[0].get_legend_handles_labels()[0]
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=2, frameon=False)
    axes[0].set_ylabel("course score (out of 10)")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def instability_figure(q1: dict, path: Path) -> None:
    """Each seed's training curves at each swept learning rate: the KL term per epoch (log scale) and the validation
    reconstruction term, so a run that blew up in its first epoch stands out from the ones that did not."""
    rows = [r for r in q1["sweeps"]["lr"] if any(r.get("histories") or [])]
    fig, (kl_ax, rec_ax) = plt.subplots(1, 2, figsize=(9, 2.8))
    for row, color in zip(rows, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for seed, h in enumerate(row["histories"]):
            if not h:
                continue
            epochs = [e["epoch"] for e in h]
            style = dict(color=color, marker="o", ms=3, alpha=0.85, label=f"lr {row['lr']:g}" if seed == 0 else None)
            kl_ax.plot(epochs, [e["train_kl"] for e in h], **style)
            rec_ax.plot(epochs, [e["valid_recon"] for e in h], **style)
    kl_ax.set_yscale("log")
    kl_ax.set_ylabel("training KL term (nats, log scale)", fontsize=9)
    rec_ax.set_ylabel("validation ‖x − x̂‖² / 2σ²_x (nats)", fontsize=9)
    for ax in (kl_ax, rec_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if rows:  # result files without curves draw empty panels
        kl_ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
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
        if all("valid_kl" in h for h in vae):  # logged where the submission names its terms (vae_loss_terms)
            ax.plot(epochs, [h["valid_kl"] for h in vae], "^-", label="validation KL term")
        if sharp and all("valid_recon" in h for h in vae):
            # One reconstruction curve through both phases, so sharpening's cost in reconstruction shows as a rise.
            more = [len(vae) + h["epoch"] for h in sharp]
            ax.axvspan(len(vae) + 0.5, more[-1] + 0.5, color="0.9", label="decoder sharpening")
            ax.plot(epochs + more, [h["valid_recon"] for h in vae + sharp], "s-", color="tab:purple",
                    label="validation reconstruction term")
        ax.set_yscale("log")
        ax.set_ylabel("loss per image (nats, log scale)", fontsize=9)
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
    """fid ratio of each benchmark model's samples beside that of its reconstructions (the decoder's ceiling)."""
    rows = [r for r in bench["rows"] if r.get("fid_ratio_recon") is not None and r.get("fid_ratio") is not None]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    names = [f"{r['model']} ({r['task']})".replace("default conv", "default") for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["fid_ratio"] for r in rows], 0.4, label="samples (prior + decoder)")
    ax.bar([x + 0.2 for x in xs], [r["fid_ratio_recon"] for r in rows], 0.4,
           label="reconstructions of training images (decoder alone)")
    ax.axhline(1.0, color="k", lw=0.8, ls=":", label="real images = 1")
    ax.set_yscale("log")
    ax.set_ylabel("fid ratio (log scale; 1 = real digits)")
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

    # The report describes the models in the zip: the submission.py beside the folders, as it built them.
    source = base / "submission.py" if (base / "submission.py").is_file() else ROOT / "submission.py"
    stale = [r for t in TASKS.values() if (r := stale_reason(base / t.folder, t.name, source))]
    if stale:
        p.exit(1, "report/build.py: " + " ".join(stale) + " The report describes the model in the zip.\n")
    try:
        sub = load_submission(source)
        (vae, vae_info), (_, gen_info) = (describe(base / t.folder, sub, t.name) for t in TASKS.values())
    except (SubmissionError, CheckpointError) as e:
        p.exit(1, f"report/build.py: {e}\n")
    inputs["submission"] = source
    figs = base / "report" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    if not args.skip_figures:
        latent_map(vae, vae_info["kit"], figs / "latent_map.png")
        interpolation(vae, vae_info["kit"], figs / "interpolation.png")
        loss_figure({"VAE": base / "VAEwolabel", "GenModel": base / "Genwithlabel"}, figs / "loss.png")
        sweep_figure(json.loads(inputs["q1_short"].read_text()), figs / "sweeps.png")
        instability_figure(json.loads(inputs["q1"].read_text()), figs / "instability.png")
        swap_figure(json.loads(inputs["label_swap"].read_text()), figs / "label_swap.png")
        ceiling_figure(json.loads(inputs["bench"].read_text()), figs / "ceiling.png")
    rel = {k: "/" + v.relative_to(ROOT).as_posix() for k, v in inputs.items()}
    rel["vae_dir"] = "/" + (base / "VAEwolabel").relative_to(ROOT).as_posix()
    rel["gen_dir"] = "/" + (base / "Genwithlabel").relative_to(ROOT).as_posix()
    rel["figs_dir"] = "/" + figs.relative_to(ROOT).as_posix()
    rel["student"] = json.dumps(student)
    rel["models"] = json.dumps({"vae": vae_info, "gen": gen_info,
                                "submission_sha256": checkpoint.file_sha256(source)})
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
        build_labs(typst, rel, base / "Genwithlabel", source)


def grey_share(images: torch.Tensor) -> float:
    """Share of the ink pixels (value above 0.1) that are grey (below 0.9): soft, blurred strokes raise it."""
    ink = images > 0.1
    return float(((images < 0.9) & ink).sum() / ink.sum())


@torch.no_grad()
def sharpness(models: dict[str, tuple[Path, Path]], per_digit: int = 100) -> dict[str, float]:
    """``grey_share`` of ``per_digit`` samples per digit of each conditional model (name -> (its folder, its
    submission.py)), drawn from N(0, I) noise as the course draws them, and of as many real test digits."""
    from vaekit.generation import sample

    labels = torch.arange(10).repeat_interleave(per_digit)
    out = {}
    for name, (folder, submission) in models.items():
        model, hp = load_model(folder, submission)
        out[name] = round(grey_share(sample(model, labels, hp["model_kwargs"]["latent_dim"], seed=0)), 4)
    out["real"] = round(grey_share(load_mnist("test").subset(len(labels)).x), 4)
    return out


def build_labs(typst, rel: dict[str, str], gen_folder: Path, submission: Path, out: Path = REPORT / "labs.pdf",
               ) -> None:
    """report/labs.pdf (or ``out``): the side labs, once they have run (their own report, apart from the
    course's); the conditional GAN is compared with the GenModel in ``gen_folder`` (built by ``submission``)."""
    labs = ROOT / "labs" / "results"
    ran = {lab: (labs / lab / "results.json").is_file() for lab in ("autoencoder", "classifier", "latent_space",
                                                                     "adain")}
    if not any(ran.values()):
        return
    inputs = {"gen": rel["gen"], "bench": rel["bench"]}
    if ran["autoencoder"] and ran["classifier"]:
        inputs["labs_dir"] = "/labs/results"
    inputs.update({f"{lab}_dir": f"/labs/results/{lab}" for lab in ("latent_space", "adain") if ran[lab]})
    if (labs / "cgan" / "Genwithlabel" / "grade_result.json").is_file():
        inputs["cgan_dir"] = "/labs/results/cgan"
        gan = labs / "cgan"
        inputs["sharpness"] = json.dumps(sharpness({"gan": (gan / "Genwithlabel", gan / "submission.py"),
                                                    "vae": (gen_folder, submission)}))
        if (labs / "cgan_variants" / "table.json").is_file():
            inputs["cgan_variants"] = "/labs/results/cgan_variants"
    typst.compile(str(REPORT / "labs.typ"), output=str(out), root=str(ROOT), sys_inputs=inputs)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
