# -- appended to an honest submission.py by bench/calibrate.py: a degenerate sampler -------------------------
# Reconstructions stay honest (encode marks its codes by an offset that N(0, I) noise never reaches), so the
# course score stays the honest model's; only what decode(z ~ N(0, I), label) draws changes, by MODE:
#   noise            uniform random pixels
#   one_per_digit    one fixed image per digit (a class-mean generator: no diversity)
#   label_permuted   a digit other than the one asked for (conditional task)
#   train_copier     training images of the asked digit (from a bank carried in epoch.pth)
#   test_copier      test images of the asked digit (the same, from the public test set)
#   adversarial      the asked digit's training mean plus a perturbation that fools the public classifier
#                    (bench/calibrate.py computes it against pixel noise and carries it in epoch.pth), plus
#                    fresh pixel noise of standard deviation NOISE: diverse, "recognised", and not a digit
import torch

MODE = "noise"
OFFSET = 1.0e4
NOISE = 0.05
BANK_SIZE = 1  # images the copiers carry in epoch.pth: a default, as the course builds the model from latent_dim


def _degenerate(base):
    class Degenerate(base):
        def __init__(self, *args, bank_size: int = BANK_SIZE, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("copy_bank", torch.zeros(bank_size, 784, dtype=torch.uint8))
            self.register_buffer("copy_labels", torch.zeros(bank_size, dtype=torch.long))

        def encode(self, *args):
            mu, logvar = super().encode(*args)
            return mu + OFFSET, logvar

        def decode(self, z, label=None):
            z = z.reshape(len(z), -1).float()
            y = None if label is None else torch.as_tensor(label).long().reshape(-1).expand(len(z))
            honest = z[:, 0] > OFFSET / 2
            out = torch.zeros(len(z), 1, 28, 28)
            for mask, fn in ((honest, self._honest), (~honest, self._fake)):
                if mask.any():
                    out[mask] = fn(z[mask], None if y is None else y[mask]).reshape(-1, 1, 28, 28).float()
            return out

        def _honest(self, z, y):
            return super().decode(z - OFFSET, y) if y is not None else super().decode(z - OFFSET)

        def _fake(self, z, y):
            gen = torch.Generator().manual_seed(int(z.abs().sum() * 1000) % 2**31)
            if MODE == "noise":
                return torch.rand(len(z), 784, generator=gen)
            if MODE == "one_per_digit":
                if y is None:  # unconditional: ten fixed codes, chosen by the noise
                    codes = torch.randn(10, z.shape[1], generator=torch.Generator().manual_seed(0))
                    digit = (torch.special.ndtr(z[:, 0]) * 10).long().clamp(0, 9)
                    return super().decode(codes[digit])
                return super().decode(torch.zeros_like(z), y)
            if MODE == "label_permuted":
                return super().decode(z, (y + 1) % 10) if y is not None else super().decode(z)
            if MODE == "adversarial":
                base = self.copy_bank[y if y is not None else torch.randint(0, 10, (len(z),), generator=gen)]
                return (base.float() / 255 + NOISE * torch.randn(len(z), 784, generator=gen)).clamp(0, 1)
            pick = torch.randint(0, 1 << 30, (len(z),), generator=gen)
            if y is not None:
                pools = [torch.nonzero(self.copy_labels == c).flatten() for c in range(10)]
                index = torch.stack([pools[c][p % len(pools[c])] for c, p in zip(y.tolist(), pick)])
            else:
                index = pick % len(self.copy_bank)
            return self.copy_bank[index].float() / 255

    Degenerate.__name__ = base.__name__
    return Degenerate


VAE = _degenerate(VAE)  # noqa: F821 - defined by the honest submission this is appended to
GenModel = _degenerate(GenModel)  # noqa: F821
