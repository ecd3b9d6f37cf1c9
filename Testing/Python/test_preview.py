"""Preview PNGs: the slices through the tumor's largest extent in three planes, outlines, truth beside them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from BrainTumorCNNLib.writing import preview
from BrainTumorCNNLib.reading.geometry import Geometry

SHAPE = (40, 56, 64)  # Z, Y, X


def _scene(centre=(12, 38, 20), radii=(5, 9, 7)):
    """A head-like block with an off-centre ellipsoid tumor (edema, enhancing rim, necrotic core) whose
    largest cross-sections are not the volume's middle slices."""
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    rng = np.random.default_rng(0)
    brain = ((z - 20) / 19) ** 2 + ((y - 28) / 27) ** 2 + ((x - 32) / 31) ** 2 < 1
    images = (rng.uniform(200, 400, (4,) + SHAPE) * brain).astype(np.float32)
    r = np.sqrt(sum(((c - m) / s) ** 2 for c, m, s in zip((z, y, x), centre, radii)))
    labels = np.zeros(SHAPE, np.uint8)
    labels[r < 1.0] = 2
    labels[r < 0.6] = 4
    labels[r < 0.3] = 1
    labels[(z > centre[0]) & (labels == 2) & (x > centre[2] + 2)] = 0  # lopsided: the largest slice is not the centre
    return images, labels


def _geometry(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1.0, 1.0, 1.0)):
    return Geometry((SHAPE[2], SHAPE[1], SHAPE[0]), spacing, (0.0, 0.0, 0.0), tuple(float(d) for d in direction))


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)],
                         ids=["LPS", "BraTS-NIfTI"])
def test_chosen_slices_are_the_tumors_largest_cross_sections(direction):
    _, labels = _scene()
    chosen = preview.choose_slices(labels, _geometry(direction))
    tumor = labels > 0
    assert [chosen[p].axis for p in ("axial", "coronal", "sagittal")] == [0, 1, 2]
    for plane, cut in chosen.items():
        per_slice = tumor.sum(axis=tuple(a for a in range(3) if a != cut.axis))
        assert per_slice[cut.index] == per_slice.max() > 0, plane


def test_planes_follow_the_image_direction_not_the_array_order():
    """A volume stored sagittally (array axis 0 runs left-right): its axial slices cut array axis 2."""
    _, labels = _scene()
    # index axes i (x), j (y), k (z) point along physical y, z, x
    geometry = _geometry(direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    chosen = preview.choose_slices(labels, geometry)
    assert {p: c.axis for p, c in chosen.items()} == {"axial": 1, "coronal": 2, "sagittal": 0}
    for cut in chosen.values():
        per_slice = (labels > 0).sum(axis=tuple(a for a in range(3) if a != cut.axis))
        assert per_slice[cut.index] == per_slice.max()


def test_the_slices_go_through_the_segmentation_else_the_truth_else_the_brain():
    """Issue 34 point 6: the result's largest sections, as the page shows them after a run (the truth's
    when the result has no tumor)."""
    images, truth = _scene()
    _, elsewhere = _scene(centre=(30, 12, 45), radii=(4, 4, 4))
    through_result = preview.choose_slices(elsewhere, _geometry(), truth=truth)
    assert through_result == preview.choose_slices(elsewhere, _geometry()) != preview.choose_slices(truth, _geometry())
    empty = np.zeros_like(truth)
    assert preview.choose_slices(empty, _geometry(), truth=truth) == preview.choose_slices(truth, _geometry())
    brain = images.any(axis=0)
    for cut in preview.choose_slices(empty, _geometry(), brain=brain).values():
        per_slice = brain.sum(axis=tuple(a for a in range(3) if a != cut.axis))
        assert per_slice[cut.index] == per_slice.max()


def _png(path):
    with Image.open(path) as image:
        return image.size, dict(image.text)


def test_png_is_written_with_the_truth_panel_only_when_truth_is_given(tmp_path):
    images, labels = _scene()
    truth = labels.copy()
    truth[truth == 4] = 1
    without = preview.write_preview(images, labels, tmp_path / "plain.png", 4, title="case: model",
                                    geometry=_geometry(spacing=(1.0, 1.0, 2.5)))
    with_truth = preview.write_preview(images, labels, tmp_path / "truth.png", 4, title="case: model, Dice 0.8",
                                       geometry=_geometry(spacing=(1.0, 1.0, 2.5)), truth=truth)
    (w0, h0), text0 = _png(without)
    (w1, h1), text1 = _png(with_truth)
    assert text0["Title"] == "case: model" and text1["Title"] == "case: model, Dice 0.8"
    assert "truth" not in text0["Description"] and "truth" in text1["Description"]
    chosen = preview.choose_slices(labels, _geometry())
    for plane, cut in chosen.items():  # 1-based, as the page numbers its slices
        assert f"{plane} slice {cut.index + 1}/{labels.shape[cut.axis]} " in text1["Description"]
    assert text1["Description"].startswith("the result's largest sections: ")
    # issue 34 point 8: the patient's right and left marked on the axial and coronal panels
    assert "axial slice" in text1["Description"] and "R L marked" in text1["Description"]
    with Image.open(without) as png:
        pixels = np.asarray(png.convert("RGB"), float)
    assert (np.abs(pixels - [255, 213, 79]).sum(axis=2) < 60).sum() > 20  # the marks' colour is drawn
    assert w1 > 1.5 * w0 and h1 == h0  # the truth columns beside the prediction's
    assert not list(tmp_path.glob(".*part*"))


def test_outlines_in_the_label_colours(tmp_path):
    """Segments are drawn as outlines: the colour of each tissue appears, and the tumor's inside still
    shows the image (not a filled overlay)."""
    from BrainTumorCNNLib import labels as label_table

    images, labels = _scene()
    path = preview.write_preview(images, labels, tmp_path / "p.png", 4, geometry=_geometry())
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for tissue in label_table.class_tissues(4):
        colour = np.round(np.array(tissue.color) * 255).astype(int)
        near = np.abs(pixels - colour).max(axis=1) <= 12
        assert near.sum() > 20, tissue.name
