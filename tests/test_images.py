"""utils/images.py and prepare_imgs.py: reading odd images, edge padding, metrics, the crop pipeline, image sets."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import prepare_imgs
from conftest import data_path
from utils import images
from utils.cli import InputError


def coordinate_image(h, w):
    """Pixel (i, j) holds (i, j, 7): a crop reveals exactly where it came from."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy, xx, np.full_like(yy, 7)], -1).astype(np.uint8)


def test_read_image_handles_gray_rgba_palette_and_refuses_the_rest(tmp_path):
    rgb = coordinate_image(20, 30)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    Image.fromarray(np.concatenate([rgb, np.full((20, 30, 1), 9, np.uint8)], -1)).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray((np.arange(600, dtype=np.uint16) * 100).reshape(20, 30)).save(tmp_path / "16.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")

    gray, channels, note = images.read_image(tmp_path / "g.png")
    assert channels == 1 and note is None and gray.shape == (20, 30, 3)
    assert (gray == rgb[..., :1]).all()
    assert (images.to_channels(gray, 1) == rgb[..., 0]).all()
    rgba, channels, note = images.read_image(tmp_path / "a.png")
    assert channels == 3 and "alpha" in note and (rgba == rgb).all()
    assert images.read_image(tmp_path / "p.png")[0].shape == (20, 30, 3)
    for name in ("16.png", "bad.png", "missing.png"):
        with pytest.raises(InputError, match=name):
            images.read_image(tmp_path / name)


@pytest.mark.parametrize("h,w", [(1, 1), (37, 71), (64, 128), (65, 3)])
def test_pad_to_multiple_repeats_the_edge(h, w):
    x = tf.constant(coordinate_image(h, w)[None])
    p = images.pad_to_multiple(x, 64).numpy()[0]
    assert p.shape[0] % 64 == 0 and p.shape[1] % 64 == 0 and p.shape[0] < h + 64 and p.shape[1] < w + 64
    assert (p[:h, :w] == x.numpy()[0]).all()
    assert (p[h:, :w] == p[h - 1:h, :w]).all() and (p[:, w:] == p[:, w - 1:w]).all()


def test_metrics():
    x = coordinate_image(200, 180).astype(np.float64)
    y = x + 2.0
    assert images.mse(x, y) == 4.0
    assert images.psnr(4.0) == pytest.approx(10 * np.log10(255 ** 2 / 4))
    assert images.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    noisy = x + np.random.default_rng(0).normal(0, 20, x.shape)
    assert 0 < images.ms_ssim(x, noisy) < 0.99
    assert np.isnan(images.ms_ssim(x[:100], x[:100]))  # too small for 5 scales


def test_training_crops_are_windows_of_the_images_and_seeded(tmp_path):
    for i, (h, w) in enumerate([(100, 120), (90, 90), (40, 200)]):  # the last is too small for the patch
        Image.fromarray(coordinate_image(h, w)).save(tmp_path / f"{i}.png")
    ds = images.training_dataset(str(tmp_path / "*.png"), 64, 4, seed=3)
    batches = [b.numpy() for b in ds.take(3)]
    assert batches[0].shape == (4, 64, 64, 3) and batches[0].dtype == np.float32
    for crop in np.concatenate(batches):
        i0, j0 = crop[0, 0, :2]
        assert (crop == coordinate_image(int(i0) + 64, int(j0) + 64)[int(i0):, int(j0):]).all()
    again = next(iter(images.training_dataset(str(tmp_path / "*.png"), 64, 4, seed=3))).numpy()
    assert (again == batches[0]).all()
    with pytest.raises(InputError, match="--patchsize 128"):
        images.training_dataset(str(tmp_path / "*.png"), 128, 4)
    with pytest.raises(InputError, match="no image files"):
        images.training_dataset(str(tmp_path / "*.jpg"), 64, 4)


def test_npy_batches(tmp_path):
    a = np.stack([coordinate_image(70, 80)] * 3)
    np.save(tmp_path / "batch.npy", a)
    np.save(tmp_path / "gray.npy", a[..., 0])
    np.save(tmp_path / "float.npy", a.astype(np.float32))
    crops = next(iter(images.training_dataset(str(tmp_path / "batch.npy"), 64, 2))).numpy()
    assert crops.shape == (2, 64, 64, 3)
    items = list(images.eval_images(str(tmp_path / "gray.npy")))
    assert [n for n, _, _ in items] == ["0", "1", "2"] and items[0][1].shape == (70, 80, 3)
    assert images.dataset_label(str(tmp_path / "batch.npy")) == "batch"
    with pytest.raises(InputError, match="uint8"):
        images.load_npy_images(tmp_path / "float.npy")


def test_a_subset_of_a_folder_is_named_apart_from_the_whole(tmp_path, monkeypatch):
    # Results files and records are named by dataset_label: a glob of some of a folder's images must not take the
    # folder's name (its results would overwrite the whole set's), while the whole folder, however given, keeps it.
    folder = tmp_path / "kodak"
    folder.mkdir()
    for i in range(1, 5):
        Image.fromarray(coordinate_image(8, 8)).save(folder / f"kodim0{i}.png")
    assert images.dataset_label(str(folder)) == "kodak"
    assert images.dataset_label(str(folder / "*.png")) == "kodak"
    assert images.dataset_record(str(folder)) == {"dataset": "kodak"}
    two = images.dataset_label(str(folder / "kodim0[12].png"))
    assert two.startswith("kodak-subset=") and len(two.split("=")[1]) == 8
    assert images.dataset_label(str(folder / "kodim0[1-2].png")) == two  # the files, not the pattern, name it
    assert images.dataset_label(str(folder / "kodim0[34].png")) != two
    assert images.dataset_record(str(folder / "kodim0[12].png")) == {
        "dataset": two, "subset_of": "kodak", "images": ["kodim01.png", "kodim02.png"]}
    # The same subset through a data/ path resolved under $RDS_DATA_DIR, from another folder: the same name.
    monkeypatch.setenv("RDS_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path / "kodak")
    assert images.dataset_label("data/kodak/kodim0[12].png") == two
    assert images.dataset_label("data/kodak/*.png") == "kodak"
    assert images.dataset_label("kodak") == "kodak"  # the named set


def test_named_sets():
    data_path("kodak")
    data_path("bsds500/val")
    assert len(images.list_images("kodak")) == 24
    assert [f.name for f in images.list_images("data/kodak/kodim0[1-3].png")] == \
        ["kodim01.png", "kodim02.png", "kodim03.png"]  # the paper's data/ paths, under $RDS_DATA_DIR
    assert len(images.list_images("bsds500", "train")) == 400 and len(images.list_images("bsds500", "val")) == 100
    val = images.validation_dataset("bsds500", 128, 4, max_images=8)
    shapes = [b.shape for b in val]
    assert shapes == [(4, 128, 128, 3)] * 2
    assert images.validation_dataset("kodak", 128, 4) is None


def test_prepare_imgs_keeps_large_color_images_and_downsamples_them(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (600, 700, 3), dtype=np.uint8)).save(src / "big.jpg")
    Image.fromarray(rng.integers(0, 256, (520, 512, 3), dtype=np.uint8)).save(src / "edge.jpg")
    Image.fromarray(rng.integers(0, 256, (300, 900, 3), dtype=np.uint8)).save(src / "small.jpg")
    Image.fromarray(rng.integers(0, 256, (600, 600), dtype=np.uint8)).save(src / "gray.jpg")
    prepare_imgs.main([str(src / "*.jpg"), str(dst), "--workers", "1"])
    out = sorted(p.name for p in dst.iterdir())
    assert out == ["big.png", "edge.png"]
    sizes = {}
    for name, (w, h) in [("big.png", (700, 600)), ("edge.png", (512, 520))]:
        with Image.open(dst / name) as im:
            sizes[name] = im.size
            f = im.width / w
            assert 0.6 <= f < 1.0 and abs(im.height - h * f) <= 1 and im.mode == "RGB"
    assert sizes["big.png"][0] / 700 != pytest.approx(sizes["edge.png"][0] / 512, abs=1e-3)  # own factors
    with pytest.raises(InputError, match="matches no files"):
        prepare_imgs.main([str(src / "*.tif"), str(dst)])
