"""Tests for piro_cli.data.render: mesh loading, normalisation and the torch rasteriser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from piro_cli.data.render import (
    ViewProtocol,
    load_mesh,
    normalize_to_unit_sphere,
    render_mesh_file,
    render_views,
)
from piro_cli.errors import BadItemError

SIZE = 64


def _object_mask(img: np.ndarray) -> np.ndarray:
    """True where a pixel is not (almost) white background."""
    return (img < 250).any(axis=-1)


def _box(extents, centre, rgba=None) -> trimesh.Trimesh:
    m = trimesh.creation.box(extents=extents)
    m.apply_translation(centre)
    if rgba is not None:
        m.visual.face_colors = np.tile(np.array(rgba, dtype=np.uint8), (len(m.faces), 1))
    return m


def _asymmetric_mesh() -> trimesh.Trimesh:
    body = _box([1.6, 0.5, 0.4], [0, 0, 0])
    knob = trimesh.creation.icosphere(subdivisions=2, radius=0.35)
    knob.apply_translation([0.5, -0.3, 0.4])
    return normalize_to_unit_sphere(trimesh.util.concatenate([body, knob]))


@pytest.fixture(scope="module")
def sphere_views() -> np.ndarray:
    mesh = normalize_to_unit_sphere(trimesh.creation.icosphere(subdivisions=3))
    return render_views(mesh, size=SIZE)


# --------------------------------------------------------------------------- rendering


def test_sphere_render_shape_background_and_shading(sphere_views: np.ndarray) -> None:
    views = sphere_views
    assert views.shape == (12, SIZE, SIZE, 3)
    assert views.dtype == np.uint8
    for img in views:
        for corner in (img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]):
            assert (corner == 255).all()
        mask = _object_mask(img)
        assert mask.mean() > 0.3  # the unit sphere fills most of the frame
        assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
        obj = img[mask]
        assert (obj < 255).any(axis=-1).all()
        assert obj[:, 0].std() > 5  # shaded, not a flat silhouette
        assert len(np.unique(obj[:, 0])) > 10
        ys, xs = np.nonzero(mask)
        centre = (SIZE - 1) / 2
        assert abs(xs.mean() - centre) < 1.5 and abs(ys.mean() - centre) < 1.5


def test_cube_renders_grey_and_centred() -> None:
    mesh = normalize_to_unit_sphere(trimesh.creation.box(extents=[1, 1, 1]))
    views = render_views(mesh, size=SIZE, protocol=ViewProtocol(num_views=4))
    assert views.shape == (4, SIZE, SIZE, 3)
    for img in views:
        mask = _object_mask(img)
        obj = img[mask].astype(int)
        assert (obj[:, 0] == obj[:, 1]).all() and (obj[:, 1] == obj[:, 2]).all()  # grey
        assert len(np.unique(obj[:, 0])) >= 3  # at least the three visible sides differ (plus AA edges)
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - (SIZE - 1) / 2) < 2


def test_depth_test_front_box_wins() -> None:
    # view 0 looks from -y towards +y: the box at y=-0.45 is in front
    red, blue = (220, 30, 30, 255), (30, 30, 220, 255)
    front_extents, front_centre = [0.5, 0.3, 0.5], [0.0, -0.45, 0.0]
    back_extents, back_centre = [1.0, 0.3, 1.0], [0.0, 0.45, 0.0]
    proto = ViewProtocol(num_views=4)
    for front_rgba, back_rgba in ((red, blue), (blue, red)):
        front = _box(front_extents, front_centre, front_rgba)
        back = _box(back_extents, back_centre, back_rgba)
        only_front = render_views(front, size=SIZE, protocol=proto, use_colors=True)[0]
        only_back = render_views(back, size=SIZE, protocol=proto, use_colors=True)[0]
        overlap = _object_mask(only_front) & _object_mask(only_back)
        # shrink the overlap by a pixel so anti-aliased edges do not count
        core = overlap.copy()
        core[1:] &= overlap[:-1]
        core[:-1] &= overlap[1:]
        core[:, 1:] &= overlap[:, :-1]
        core[:, :-1] &= overlap[:, 1:]
        assert core.sum() > 50
        for order in ((front, back), (back, front)):  # independent of the face order
            both = render_views(trimesh.util.concatenate(list(order)), size=SIZE, protocol=proto, use_colors=True)[0]
            px = both[core].astype(int)
            f_ch, b_ch = (0, 2) if front_rgba is red else (2, 0)
            assert (px[:, f_ch] > px[:, b_ch] + 50).all()
            np.testing.assert_array_equal(both[core], only_front[core])


def test_views_differ_and_follow_azimuth_order() -> None:
    mesh = _asymmetric_mesh()
    views = render_views(mesh, size=SIZE)
    for k in range(12):
        diff = np.abs(views[k].astype(int) - views[(k + 1) % 12].astype(int)).mean()
        assert diff > 1.0, f"view {k} and {k + 1} look the same"

    # a bar along x: widest seen from azimuth 0 and 180, narrowest from 90 and 270
    bar = normalize_to_unit_sphere(trimesh.creation.box(extents=[2.0, 0.3, 0.3]))
    bviews = render_views(bar, size=SIZE)
    width = [int(_object_mask(v).any(axis=0).sum()) for v in bviews]
    assert width[0] > 2 * width[3] and width[6] > 2 * width[9]
    assert width[0] > 2 * width[9] and width[6] > 2 * width[3]
    assert abs(width[0] - width[6]) <= 2
    # widths fall monotonically from azimuth 0 to 90
    assert width[0] >= width[1] >= width[2] >= width[3]
    # the camera is elevated: the top face of a flat slab is visible (taller than its thickness)
    slab = normalize_to_unit_sphere(trimesh.creation.box(extents=[1.0, 1.0, 0.05]))
    sv = render_views(slab, size=SIZE, protocol=ViewProtocol(num_views=1))[0]
    assert _object_mask(sv).any(axis=1).sum() > 0.25 * SIZE


def test_num_views_and_protocol_options() -> None:
    mesh = _asymmetric_mesh()
    v4 = render_views(mesh, size=SIZE, protocol=ViewProtocol(num_views=4))
    v12 = render_views(mesh, size=SIZE)
    assert v4.shape == (4, SIZE, SIZE, 3)
    # view k of 4 is at azimuth 90k, i.e. view 3k of 12
    for k in range(4):
        np.testing.assert_array_equal(v4[k], v12[3 * k])
    # the same object stored y-up renders the same with up_axis="y"
    y_up = mesh.copy()
    v = np.asarray(mesh.vertices)
    y_up.vertices = np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)
    vy = render_views(y_up, size=SIZE, protocol=ViewProtocol(num_views=4, up_axis="y"))
    assert np.abs(vy.astype(int) - v4.astype(int)).max() <= 2


def test_winding_independent_and_degenerate_faces() -> None:
    mesh = _asymmetric_mesh()
    ref = render_views(mesh, size=SIZE, protocol=ViewProtocol(num_views=3))
    faces = np.asarray(mesh.faces).copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(faces)) < 0.5
    faces[flip] = faces[flip][:, ::-1]
    flipped = trimesh.Trimesh(vertices=mesh.vertices, faces=faces, process=False)
    out = render_views(flipped, size=SIZE, protocol=ViewProtocol(num_views=3))
    np.testing.assert_array_equal(out, ref)

    # zero-area faces (repeated vertex, collinear) must not crash or change the picture
    degenerate = np.array([[0, 0, 0], [0, 1, 1], [1, 2, 3]])
    verts = np.vstack([mesh.vertices, [[0, 0, 0], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.3, 0.3, 0.3]]])
    n = len(mesh.vertices)
    bad = trimesh.Trimesh(vertices=verts, faces=np.vstack([mesh.faces, degenerate + n]), process=False, validate=False)
    out = render_views(bad, size=SIZE, protocol=ViewProtocol(num_views=3))
    np.testing.assert_array_equal(out, ref)


def test_slivers_leave_no_cracks() -> None:
    # a square fan-split into 400 long thin triangles: its interior must be fully covered
    n = 400
    top = np.stack([np.linspace(-0.6, 0.6, n + 1), np.zeros(n + 1), np.full(n + 1, 0.6)], axis=1)
    verts = np.vstack([top, [[0.0, 0.0, -0.6]]])
    apex = n + 1
    faces = np.array([[i, i + 1, apex] for i in range(n)])
    fan = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    img = render_views(fan, size=SIZE, protocol=ViewProtocol(num_views=1, elevation_deg=0.0))[0]
    mask = _object_mask(img)
    ys, xs = np.nonzero(mask)
    # every pixel strictly inside the triangle's silhouette is covered: rows are contiguous runs
    for row in range(ys.min() + 2, ys.max() - 1):
        cols = np.nonzero(mask[row])[0]
        assert cols.size and cols.max() - cols.min() + 1 == cols.size
    # coplanar slivers shade identically and a crack at the supersampled level would
    # lighten an output pixel: the interior (mask eroded by one pixel) is one flat grey
    core = mask.copy()
    core[1:] &= mask[:-1]
    core[:-1] &= mask[1:]
    core[:, 1:] &= mask[:, :-1]
    core[:, :-1] &= mask[:, 1:]
    assert core.sum() > 200
    assert len(np.unique(img[core].reshape(-1))) == 1


def test_empty_mesh_renders_background() -> None:
    empty = trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=int))
    out = render_views(empty, size=16, protocol=ViewProtocol(num_views=2))
    assert out.shape == (2, 16, 16, 3) and (out == 255).all()


def test_big_triangles_and_near_camera_do_not_crash() -> None:
    # a triangle much larger than the view and vertices behind the camera
    tri = trimesh.Trimesh(vertices=[[-50, -50, 0], [50, -50, 0], [0, 50, 0], [0, -5, 5]], faces=[[0, 1, 2], [0, 1, 3]])
    out = render_views(tri, size=32, protocol=ViewProtocol(num_views=2))
    assert out.shape == (2, 32, 32, 3)


# --------------------------------------------------------------------------- loading

CUBE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=float)
CUBE_QUADS = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]


def _off_body() -> str:
    lines = [" ".join(f"{c:g}" for c in v) for v in CUBE_V]
    lines += ["4 " + " ".join(map(str, q)) for q in CUBE_QUADS]
    return "\n".join(lines) + "\n"


def test_load_off_regular_and_merged_header(tmp_path: Path) -> None:
    regular = tmp_path / "cube.off"
    regular.write_text("OFF\n8 6 0\n" + _off_body())
    quirk = tmp_path / "cube_quirk.off"
    quirk.write_text("OFF8 6 0\n" + _off_body())  # ModelNet-40 style merged header
    for path in (regular, quirk):
        mesh = load_mesh(path)
        assert isinstance(mesh, trimesh.Trimesh)
        assert len(mesh.vertices) == 8 and len(mesh.faces) == 12  # quads fan-triangulated
        np.testing.assert_allclose(mesh.bounds, [[0, 0, 0], [1, 1, 1]])
    # the large-count form from the real data set
    big = trimesh.creation.icosphere(subdivisions=2)
    text = trimesh.exchange.off.export_off(big)
    body = text.split("\n", 2)[2]
    quirk_big = tmp_path / "sphere.off"
    quirk_big.write_text(f"OFF{len(big.vertices)} {len(big.faces)} 0\n" + body)
    assert len(load_mesh(str(quirk_big)).faces) == len(big.faces)


@pytest.mark.parametrize("ext", ["off", "obj", "stl", "ply"])
def test_load_formats_written_by_trimesh(tmp_path: Path, ext: str) -> None:
    src = trimesh.creation.icosphere(subdivisions=2)
    path = tmp_path / f"sphere.{ext}"
    src.export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == len(src.faces)
    np.testing.assert_allclose(mesh.bounds, src.bounds, atol=1e-5)
    views = render_mesh_file(path, size=32, protocol=ViewProtocol(num_views=2))
    assert views.shape == (2, 32, 32, 3) and _object_mask(views[0]).any()


def test_load_obj_with_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.obj"
    path.write_bytes(b"# mod\xe8le caf\xe9\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert len(load_mesh(path).faces) == 1


def test_load_scene_is_concatenated(tmp_path: Path) -> None:
    scene = trimesh.Scene([_box([1, 1, 1], [0, 0, 0]), _box([1, 1, 1], [3, 0, 0])])
    path = tmp_path / "two.obj"
    scene.export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == 24


@pytest.mark.parametrize(
    "name,content",
    [
        ("garbage.off", b"this is not a mesh\n\x00\x01\x02"),
        ("garbage.obj", b"\x89PNG\r\n\x1a\n not an obj at all"),
        ("garbage.stl", b"solid nothing\nendsolid\n"),
        ("garbage.ply", b"ply\nformat ascii 1.0\nelement vertex 3\n"),
        ("empty.off", b""),
        ("empty.obj", b"   \n"),
        ("nofaces.off", b"OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n"),
        ("truncated.off", b"OFF\n8 6 0\n0 0 0\n1 0 0\n"),
        ("badindex.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"),
        ("unknown.xyz", b"1 2 3\n"),
    ],
)
def test_bad_files_raise_bad_item_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadItemError) as info:
        load_mesh(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_bad_item_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.off"
    with pytest.raises(BadItemError, match="nope.off"):
        load_mesh(path)


# --------------------------------------------------------------------------- normalisation


def test_normalize_to_unit_sphere() -> None:
    mesh = trimesh.creation.box(extents=[4.0, 1.0, 2.0])
    mesh.apply_translation([10.0, -3.0, 7.0])
    before = mesh.vertices.copy()
    out = normalize_to_unit_sphere(mesh)
    np.testing.assert_array_equal(mesh.vertices, before)  # input untouched
    assert np.linalg.norm(out.vertices, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(out.bounds.mean(axis=0), 0.0, atol=1e-12)
    # asymmetric: bbox centre, not the vertex mean
    cone = trimesh.creation.cone(radius=1.0, height=3.0, sections=32)
    out = normalize_to_unit_sphere(cone)
    np.testing.assert_allclose(out.bounds.mean(axis=0), 0.0, atol=1e-12)
    assert np.linalg.norm(out.vertices, axis=1).max() == pytest.approx(1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    mesh = _asymmetric_mesh()
    cpu = render_views(mesh, size=SIZE)
    gpu = render_views(mesh, size=SIZE, device="cuda")
    assert np.abs(cpu.astype(int) - gpu.astype(int)).max() <= 3
    assert (np.abs(cpu.astype(int) - gpu.astype(int)) > 0).mean() < 0.01
