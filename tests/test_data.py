import gzip
import shutil

import numpy as np
import pytest
import torch

from vaekit import data


def test_official_splits_have_course_sizes_shapes_and_range():
    sizes = {"train": 50_000, "valid": 10_000, "test": 10_000}
    for split, n in sizes.items():
        s = data.load_mnist(split)
        assert s.x.shape == (n, 1, 28, 28) and s.x.dtype == torch.float32
        assert s.y.shape == (n,) and s.y.dtype == torch.int64
        assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0
        assert set(s.y.unique().tolist()) == set(range(10))


def test_valid_is_the_tail_of_the_official_train_set():
    raw = data.read_idx_file(data.MNIST_RAW / "train-labels-idx1-ubyte.gz")
    assert torch.equal(data.load_mnist("valid").y, torch.from_numpy(raw[50_000:].astype(np.int64)))
    assert torch.equal(data.load_mnist("train").y, torch.from_numpy(raw[:50_000].astype(np.int64)))


def test_md5_of_every_shipped_file_matches():
    for stem, md5 in data.MD5.items():
        data.read_idx_file(data.MNIST_RAW / f"{stem}.gz", md5)  # raises on mismatch


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(data.MNIST_RAW, raw)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[100] ^= 0xFF
    target.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        data.load_mnist("test", raw)
    (raw / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz is missing"):
        data.load_mnist("train", raw)


def test_bad_split_name():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_mnist("validation")


def test_test_data_from_npz_uint8_and_float(tmp_path):
    x = (np.arange(3 * 784) % 256).astype(np.uint8).reshape(3, 28, 28)
    np.savez(tmp_path / "t.npz", x=x, y=np.array([1, 2, 3]))
    s = data.load_test_data(tmp_path / "t.npz")
    assert s.x.shape == (3, 1, 28, 28) and torch.allclose(s.x[0, 0, 0, :3], torch.tensor([0, 1, 2]) / 255.0)
    np.savez(tmp_path / "bad.npz", x=np.full((2, 784), 3.0), y=np.array([1, 2]))
    with pytest.raises(data.DataError, match=r"lie in \[0, 1\]"):
        data.load_test_data(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 27, 27)), y=np.array([1, 2]))
    with pytest.raises(data.DataError, match="28x28"):
        data.load_test_data(tmp_path / "shape.npz")


def test_test_data_from_idx_folder_matches_official():
    s = data.load_test_data(data.MNIST_RAW / "t10k-images-idx3-ubyte.gz")
    official = data.load_mnist("test")
    assert torch.equal(s.x, official.x) and torch.equal(s.y, official.y)
    assert data.dataset_sha256(s) == data.dataset_sha256(official)
