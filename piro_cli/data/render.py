"""Mesh loading and a small offscreen renderer (pure torch, CPU or GPU).

`render_views` turns a mesh into the multi-view images the rest of the toolkit
works on (the MVCNN protocol: ``num_views`` cameras spaced evenly around the up
axis, elevated 30 degrees, all looking at the origin).

The rasteriser is vectorised torch code with no Python loop over faces or pixels
(only over fixed-size chunks):

1. project the vertices for all views at once (pinhole camera);
2. split every (view, face) triangle at its middle vertex into two halves, each
   bounded by two fixed edges, and enumerate (half, pixel row) pairs with
   ``repeat_interleave``;
3. intersect each row's centre line with the two edges: the exact pixel span
   (so long thin slivers cost their rows, not their bounding-box area), and
   1/depth at both ends (linear in screen space: perspective-correct);
4. enumerate the (triangle, pixel) pairs of the spans and z-buffer them: per
   pixel, ``scatter_reduce('amin')`` over a packed int64 key
   ``(quantised depth << face_bits) | face``, so the nearest face wins and ties
   break deterministically (independent of face order);
5. shade each (view, face) once (flat, two-sided Lambertian: headlight + key
   light + ambient) and gather the winning face's colour per pixel.

Steps 2-4 run in chunks and big meshes a few views at a time, so memory stays
bounded for 100k+ faces and screen-filling triangles.

No back-face culling: many ModelNet meshes have inconsistent winding, so every
face is drawn and its normal is flipped towards the camera before shading.
Images are rendered at ``SUPERSAMPLE`` times the size and average-pooled down
(anti-aliasing).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from piro_cli.errors import BadItemError

MESH_SUFFIXES = (".off", ".obj", ".stl", ".ply")

SUPERSAMPLE = 2
"""Render at this many times the requested size, then average-pool (anti-aliasing)."""

ROWS_PER_CHUNK = 1 << 18
"""(Triangle, row) pairs enumerated at once by the rasteriser (bounds its memory)."""

PIXELS_PER_CHUNK = 1 << 21
"""(Triangle, pixel) pairs z-buffered at once (bounds memory: about 60 bytes each)."""

TRIANGLES_PER_PASS = 1 << 20
"""(View, face) triangles rasterised together; big meshes are rendered a few views at a time."""

GREY_ALBEDO = 0.8
AMBIENT = 0.25
HEADLIGHT = 0.5
KEY_LIGHT = 0.35
BACKGROUND = 255


@dataclass(frozen=True)
class ViewProtocol:
    """Where the cameras are.

    View k sits at azimuth ``k * 360 / num_views`` degrees around the up axis,
    ``elevation_deg`` above the horizontal plane, ``distance`` from the origin,
    and looks at the origin. Azimuth 0 looks at the object's front from the
    -y side for z-up meshes (x runs left to right in the image), the camera
    then moves counter-clockwise seen from above; for y-up meshes the same
    camera looks from +z (the ShapeNet front) with x running left to right.

    With the defaults the unit sphere spans about 97% of the image width, so a
    normalised object fills the frame without being clipped.
    """

    num_views: int = 12
    elevation_deg: float = 30.0
    up_axis: str = "z"
    fov_deg: float = 40.0
    distance: float = 3.0

    def __post_init__(self) -> None:
        if self.num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {self.num_views}")
        if self.up_axis not in ("y", "z"):
            raise ValueError(f"up_axis must be 'y' or 'z', got {self.up_axis!r}")
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"fov_deg must be in (0, 180), got {self.fov_deg}")
        if self.distance <= 1.0:
            raise ValueError(f"distance must be > 1 (the object is normalised to the unit sphere), got {self.distance}")

    def azimuths_deg(self) -> list[float]:
        return [k * 360.0 / self.num_views for k in range(self.num_views)]


@dataclass(frozen=True)
class ViewVariation:
    """What changes from view to view in a photograph and the plain protocol keeps fixed (the synthetic set's
    default): the camera's elevation, distance and azimuth jitter, the key light's direction and the lights'
    intensities, and a textured, cluttered background instead of white. Drawn per view from `seed`, so the same
    seed renders the same images."""

    seed: int = 0
    elevation_jitter_deg: float = 12.0  # elevation = protocol's +- this
    azimuth_jitter_deg: float = 6.0
    distance_range: tuple[float, float] = (0.92, 1.12)  # times the protocol's distance
    intensity_range: tuple[float, float] = (0.55, 1.35)  # scales the head and key lights
    ambient_range: tuple[float, float] = (0.6, 1.3)  # scales the ambient light
    clutter: int = 6  # random shapes in each view's background


# --------------------------------------------------------------------------- loading


def _bad_mesh(name: str, reason: str) -> BadItemError:
    return BadItemError(name, reason, fix="re-download or re-export the mesh (OFF, OBJ, STL or PLY with at least one face)")


_OFF_HEADER = re.compile(rb"^\s*(?:#[^\n]*\n\s*)*[A-Z]*OFF", re.IGNORECASE)


def _parse_off(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A tolerant OFF parser (also reads 'OFF490 518 0' merged headers and polygon faces)."""
    text = data.decode("utf-8", errors="replace")
    lines = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    if not lines:
        raise ValueError("file has no content")
    first = lines[0]
    m = re.match(r"^([A-Za-z]*OFF)(.*)$", first)
    if m is None:
        raise ValueError(f"first line {first[:40]!r} does not start with 'OFF'")
    rest = m.group(2).strip()
    body = lines[1:]
    if not rest:  # regular layout: counts on the next line
        if not body:
            raise ValueError("missing the vertex/face count line")
        rest, body = body[0], body[1:]
    counts = rest.split()
    if len(counts) < 2:
        raise ValueError(f"malformed vertex/face count line {rest[:40]!r}")
    nv, nf = int(counts[0]), int(counts[1])
    if nv < 0 or nf < 0 or len(body) < nv + nf:
        raise ValueError(f"header announces {nv} vertices and {nf} faces but the file has {len(body)} data lines")
    # fast paths for the common case (plain "x y z" vertices, all-triangle faces), else line by line
    flat_v = " ".join(body[:nv]).split()
    if len(flat_v) == 3 * nv:
        vertices = np.array(flat_v, dtype=np.float64).reshape(nv, 3)
    else:
        vertices = np.array([ln.split()[:3] for ln in body[:nv]], dtype=np.float64).reshape(nv, 3)
    flat_f = " ".join(body[nv : nv + nf]).split()
    faces = None
    if len(flat_f) == 4 * nf:
        arr = np.array(flat_f, dtype=np.int64).reshape(nf, 4)
        if (arr[:, 0] == 3).all():
            faces = arr[:, 1:]
    if faces is None:
        tris: list[list[int]] = []
        for ln in body[nv : nv + nf]:
            parts = ln.split()
            n = int(parts[0])
            idx = [int(p) for p in parts[1 : n + 1]]
            if len(idx) < n:
                raise ValueError(f"face line {ln[:40]!r} has fewer than {n} indices")
            for j in range(1, n - 1):  # fan triangulation of polygons
                tris.append([idx[0], idx[j], idx[j + 1]])
        faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise ValueError("a face refers to a vertex index outside the vertex list")
    return vertices, faces


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    """Load an OFF/OBJ/STL/PLY file as one triangle mesh (a scene is concatenated).

    Raises `BadItemError` naming the file for a missing, empty, unreadable or
    face-less mesh. Handles the ModelNet-40 OFF quirk where the header and the
    counts share the first line ('OFF490 518 0').
    """
    p = Path(path)
    name = str(path)
    if not p.is_file():
        raise _bad_mesh(name, "mesh file not found or not a regular file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise _bad_mesh(name, f"cannot read the file ({exc.strerror or exc})") from exc
    if not data.strip():
        raise _bad_mesh(name, "the file is empty")

    suffix = p.suffix.lower()
    # an OFF by name, or by content when the name says nothing (ModelNet copies sometimes lose it)
    is_off = suffix == ".off" or (suffix not in MESH_SUFFIXES and _OFF_HEADER.match(data[:4096]) is not None)
    mesh: trimesh.Trimesh | None = None
    errors: list[str] = []

    if is_off:
        # Our parser first: fast, and it reads the merged-header quirk for sure.
        try:
            v, f = _parse_off(data)
            mesh = trimesh.Trimesh(vertices=v, faces=f, process=False)
        except Exception as exc:  # noqa: BLE001 -- fall back to trimesh below
            errors.append(f"OFF parser: {exc}")

    if mesh is None:
        file_type = "off" if is_off else (suffix.lstrip(".") or None)
        if file_type is None:
            raise _bad_mesh(name, "the file has no extension, so its format is unknown")
        if file_type in ("obj", "off"):
            # text formats: drop undecodable bytes (e.g. latin-1 comments) ourselves, else trimesh
            # falls back to charset detection, which needs an optional package
            data = data.decode("utf-8", errors="replace").encode("utf-8")
        try:
            loaded = trimesh.load_mesh(io.BytesIO(data), file_type=file_type, process=False)
            if isinstance(loaded, trimesh.Trimesh):
                mesh = loaded
            elif isinstance(loaded, list | tuple):
                meshes = [m for m in loaded if isinstance(m, trimesh.Trimesh)]
                mesh = trimesh.util.concatenate(meshes) if meshes else None
            else:
                errors.append(f"trimesh returned {type(loaded).__name__}, not a mesh")
        except Exception as exc:  # noqa: BLE001 -- any loader failure is a bad item
            errors.append(f"trimesh: {type(exc).__name__}: {exc}")

    if mesh is None or not isinstance(mesh, trimesh.Trimesh):
        detail = "; ".join(" ".join(e.split())[:200] for e in errors) or "unknown error"  # one line
        raise _bad_mesh(name, f"cannot parse the mesh ({detail})")

    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        raise _bad_mesh(name, "the mesh has no faces")
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        keep = finite[faces].all(axis=1)
        faces = faces[keep]
        if len(faces) == 0:
            raise _bad_mesh(name, "every face uses a NaN/inf vertex coordinate")
        colors = None
        try:
            if mesh.visual.kind == "face":
                colors = np.asarray(mesh.visual.face_colors)[keep]
        except Exception:  # noqa: BLE001
            colors = None
        vertices = np.where(finite[:, None], vertices, 0.0)
        mesh = trimesh.Trimesh(vertices=vertices, faces=faces, face_colors=colors, process=False)
    return mesh


def normalize_to_unit_sphere(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy centred at its bounding-box centre, scaled so the farthest vertex is at distance 1."""
    out = mesh.copy()
    v = np.asarray(out.vertices, dtype=np.float64)
    if len(v) == 0:
        return out
    used = np.unique(np.asarray(out.faces).reshape(-1)) if len(out.faces) else np.arange(len(v))
    ref = v[used]
    center = (ref.min(axis=0) + ref.max(axis=0)) / 2.0
    v = v - center
    radius = float(np.linalg.norm(v[used], axis=1).max())
    if radius > 0 and math.isfinite(radius):
        v = v / radius
    out.vertices = v
    return out


# --------------------------------------------------------------------------- cameras


def _camera_frames(
    protocol: ViewProtocol, dtype: torch.dtype, device: torch.device, jitter: dict[str, torch.Tensor] | None = None
):
    """Camera centres (V,3), right (V,3), up (V,3), forward (V,3) in z-up world coordinates; `jitter` (per view:
    azimuth and elevation offsets in degrees, distance factors) moves each camera (ViewVariation)."""
    az = torch.tensor(protocol.azimuths_deg(), dtype=torch.float64)
    el = torch.full_like(az, protocol.elevation_deg)
    d = torch.full_like(az, protocol.distance)
    if jitter is not None:
        az, el, d = az + jitter["azimuth"], el + jitter["elevation"], d * jitter["distance"]
    az, el = az * (math.pi / 180.0), el * (math.pi / 180.0)
    # azimuth 0 -> camera on the -y side looking towards +y; moves counter-clockwise seen from above
    centre = torch.stack([d * torch.cos(el) * torch.sin(az), -d * torch.cos(el) * torch.cos(az), d * torch.sin(el)], dim=1)
    forward = -centre / centre.norm(dim=1, keepdim=True)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(forward)
    right = torch.linalg.cross(forward, world_up)
    bad = right.norm(dim=1) < 1e-9  # looking straight down/up: pick any right vector
    if bad.any():
        alt = torch.stack([torch.cos(az), torch.sin(az), torch.zeros_like(az)], dim=1)
        right = torch.where(bad[:, None], alt, right)
    right = right / right.norm(dim=1, keepdim=True)
    up = torch.linalg.cross(right, forward)
    return tuple(t.to(device=device, dtype=dtype) for t in (centre, right, up, forward))


def _draw_variation(variation: ViewVariation, num_views: int) -> dict[str, torch.Tensor]:
    """Each view's camera jitter, light direction and intensities (float64, from the variation's seed)."""
    g = torch.Generator().manual_seed(int(variation.seed) % 2**63)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (num_views,)), generator=g, dtype=torch.float64)

    return {
        "azimuth": uniform(-variation.azimuth_jitter_deg, variation.azimuth_jitter_deg),
        "elevation": uniform(-variation.elevation_jitter_deg, variation.elevation_jitter_deg),
        "distance": uniform(*variation.distance_range),
        "light_azimuth": uniform(-math.pi, math.pi),
        "light_elevation": uniform(0.1, 1.2),
        "intensity": uniform(*variation.intensity_range),
        "ambient": uniform(*variation.ambient_range),
        "background_seed": torch.randint(0, 2**62, (num_views,), generator=g),
    }


def _backgrounds(draws: dict[str, torch.Tensor], num_views: int, res: int, clutter: int, device) -> torch.Tensor:
    """(V, res*res, 3) float backgrounds: a smooth random colour field with `clutter` random boxes and discs of
    muted colours, different in every view."""
    out = []
    ys, xs = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    for v in range(num_views):
        g = torch.Generator().manual_seed(int(draws["background_seed"][v]))
        field = torch.rand(1, 3, 4, 4, generator=g) * 0.5 + 0.35
        image = torch.nn.functional.interpolate(field, size=(res, res), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)
        for _ in range(clutter):
            colour = torch.rand(3, generator=g) * 0.6 + 0.2
            cx, cy, w, h = torch.rand(4, generator=g).tolist()
            w, h = 0.08 + 0.3 * w, 0.08 + 0.3 * h
            if torch.rand(1, generator=g).item() < 0.5:
                mask = ((xs - cx).abs() < w / 2) & ((ys - cy).abs() < h / 2)
            else:
                mask = ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2 < 1
            image[mask] = 0.6 * colour + 0.4 * image[mask]
        out.append(image.clamp(0, 1).reshape(-1, 3))
    return torch.stack(out).to(device)


def _to_z_up(vertices: torch.Tensor, up_axis: str) -> torch.Tensor:
    if up_axis == "z":
        return vertices
    # y-up -> z-up: rotate +90 degrees about x, (x, y, z) -> (x, -z, y); the +z front ends at -y
    return torch.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], dim=1)


# --------------------------------------------------------------------------- rasteriser


def _rasterize(
    sx: torch.Tensor, sy: torch.Tensor, inv_z: torch.Tensor, faces: torch.Tensor, valid: torch.Tensor, res: int
) -> torch.Tensor:
    """Z-buffer scanline rasterisation of all views at once.

    sx, sy: (V, N) pixel coordinates (pixel i spans [i, i+1), centre i+0.5);
    inv_z: (V, N) 1/depth (linear in screen space); faces: (F, 3) long; valid: (V, F) bool.
    Returns (V, res, res) long: the winning face index per pixel, F (one past the last face) for background.

    Work is proportional to the covered pixels plus the triangles' row counts, not
    their bounding-box areas (which explode for the long thin slivers CAD meshes
    are full of). Corners are sorted by y so every edge is walked top to bottom:
    two triangles sharing an edge compute bit-identical crossings, so no cracks.
    """
    device = sx.device
    V = sx.shape[0]
    Fn = faces.shape[0]
    out_shape = (V, res, res)
    if Fn == 0:
        return torch.zeros(out_shape, dtype=torch.long, device=device)

    fl = faces.reshape(-1)
    x = sx.index_select(1, fl).reshape(-1, 3)  # (V*F, 3)
    y = sy.index_select(1, fl).reshape(-1, 3)
    w = inv_z.index_select(1, fl).reshape(-1, 3)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    ok = valid.reshape(-1) & torch.isfinite(area) & (area.abs() > 1e-10)
    # rows whose centre lies within the triangle's y extent
    row_lo = torch.ceil(y.amin(1) - 0.5).clamp(0, res)
    row_hi = torch.floor(y.amax(1) - 0.5).clamp(-1, res - 1)
    nrows = (row_hi - row_lo + 1).clamp(min=0)
    x_lo = torch.ceil(x.amin(1) - 0.5)
    x_hi = torch.floor(x.amax(1) - 0.5)
    ok &= (nrows > 0) & (x_hi >= x_lo) & (x_hi >= 0) & (x_lo <= res - 1)
    tri = ok.nonzero().squeeze(1)  # flat (view * F + face) ids of drawable triangles
    if tri.numel() == 0:
        return torch.full(out_shape, Fn, dtype=torch.long, device=device)

    # sort each triangle's corners by y: v0 top, v2 bottom. Every edge is then walked
    # top to bottom, so two triangles sharing an edge compute bit-identical crossings (no cracks).
    ys, order = y.index_select(0, tri).sort(dim=1)
    xs = x.index_select(0, tri).gather(1, order)
    ws = w.index_select(0, tri).gather(1, order)
    view_of = tri // Fn
    face_of = tri % Fn
    y0, y1, y2 = ys.unbind(1)
    x0, x1, x2 = xs.unbind(1)
    w0, w1, w2 = ws.unbind(1)

    # Split every triangle at v1 into an upper half (rows above v1: edges v0-v2 and v0-v1)
    # and a lower half (rows from v1 down: edges v0-v2 and v1-v2), each bounded by two fixed
    # edges. Per half: first row, row count, and for both edges (y_top, 1/dy, x_top, dx, w_top, dw).
    r_mid = torch.ceil(y1 - 0.5).clamp(0, res)
    r_top = torch.ceil(y0 - 0.5).clamp(0, res)
    r_bot = torch.floor(y2 - 0.5).clamp(-1, res - 1) + 1
    n_up = (r_mid.clamp(max=r_bot) - r_top).clamp(min=0)
    n_lo = (r_bot - r_mid.clamp(min=r_top)).clamp(min=0)

    def edge(ya, yb, xa, xb, wa, wb):
        dy = yb - ya
        return [ya, torch.where(dy > 0, 1.0 / dy.clamp(min=1e-20), torch.zeros_like(dy)), xa, xb - xa, wa, wb - wa]

    long_edge = edge(y0, y2, x0, x2, w0, w2)
    params = torch.cat(
        [
            torch.stack(long_edge + edge(y0, y1, x0, x1, w0, w1), dim=1),
            torch.stack(long_edge + edge(y1, y2, x1, x2, w1, w2), dim=1),
        ]
    )  # (2T, 12)
    half_first_row = torch.cat([r_top, r_mid.clamp(min=r_top)]).long()
    half_rows = torch.cat([n_up, n_lo]).long()
    half_tri = torch.cat([torch.arange(tri.numel(), device=device)] * 2)
    live = (half_rows > 0).nonzero().squeeze(1)
    params = params.index_select(0, live)
    half_first_row = half_first_row.index_select(0, live)
    half_rows = half_rows.index_select(0, live)
    half_tri = half_tri.index_select(0, live)
    # pixel index of column 0 of the first row, and the face id, per half
    half_base = (view_of.index_select(0, half_tri) * res + half_first_row) * res
    half_face = face_of.index_select(0, half_tri)

    # depth quantisation: larger 1/z = nearer = smaller key
    z_hi = float(ws.max())
    z_lo = float(ws.min())
    span = max(z_hi - z_lo, 1e-12)
    face_bits = max(1, int(Fn).bit_length())  # ids 0..F, F = background
    depth_bits = min(62 - face_bits, 40)
    q_max = float((1 << depth_bits) - 1)
    depth_scale = q_max / span
    empty = ((1 << depth_bits) << face_bits) | Fn  # farther than any face, face id = background
    zbuf = torch.full((V * res * res,), empty, dtype=torch.long, device=device)

    for lo, hi in _chunks(half_rows, ROWS_PER_CHUNK):
        # ---- (half triangle, row) pairs
        cnt = half_rows[lo:hi]
        n_rows = int(cnt.sum())
        h = torch.repeat_interleave(torch.arange(lo, hi, device=device), cnt, output_size=n_rows)
        first = torch.cumsum(cnt, 0) - cnt
        k = torch.arange(n_rows, device=device) - first.index_select(0, h - lo)  # row within the half
        yc = (half_first_row.index_select(0, h) + k).to(sx.dtype) + 0.5
        p = params.index_select(0, h)
        ta = ((yc - p[:, 0]) * p[:, 1]).clamp(0.0, 1.0)
        xa = p[:, 2] + ta * p[:, 3]
        wa = p[:, 4] + ta * p[:, 5]
        tb = ((yc - p[:, 6]) * p[:, 7]).clamp(0.0, 1.0)
        xb = p[:, 8] + tb * p[:, 9]
        wb = p[:, 10] + tb * p[:, 11]
        x_left = torch.minimum(xa, xb)
        x_right = torch.maximum(xa, xb)
        px0 = torch.ceil(x_left - 0.5).clamp(min=0)
        px1 = torch.floor(x_right - 0.5).clamp(max=res - 1)
        npx = (px1 - px0 + 1).clamp(min=0).long()
        dx = xb - xa
        slope = torch.where(dx.abs() > 1e-6, (wb - wa) / dx, torch.zeros_like(dx))
        w_first = wa + slope * (px0 + 0.5 - xa)  # 1/z at the span's first pixel centre
        keep = (npx > 0).nonzero().squeeze(1)
        if keep.numel() == 0:
            continue
        npx = npx.index_select(0, keep)
        hk = h.index_select(0, keep)
        pix_first = half_base.index_select(0, hk) + k.index_select(0, keep) * res + px0.index_select(0, keep).long()
        w_first = w_first.index_select(0, keep)
        slope = slope.index_select(0, keep)
        face_r = half_face.index_select(0, hk)
        # ---- (triangle, pixel) pairs of the spans
        for a, b in _chunks(npx, PIXELS_PER_CHUNK):
            cnt_px = npx[a:b]
            n_pix = int(cnt_px.sum())
            r = torch.repeat_interleave(torch.arange(a, b, device=device), cnt_px, output_size=n_pix)
            first_px = torch.cumsum(cnt_px, 0) - cnt_px
            local = torch.arange(n_pix, device=device) - first_px.index_select(0, r - a)
            iz = w_first.index_select(0, r) + slope.index_select(0, r) * local.to(sx.dtype)
            q = ((z_hi - iz) * depth_scale).clamp(0.0, q_max).long()
            key = (q << face_bits) | face_r.index_select(0, r)
            zbuf.scatter_reduce_(0, pix_first.index_select(0, r) + local, key, reduce="amin")

    return (zbuf & ((1 << face_bits) - 1)).view(out_shape)


def _chunks(weights: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Split range(len(weights)) into consecutive pieces whose weight sums stay near `budget`."""
    n = weights.numel()
    if n == 0:
        return []
    ends = torch.cumsum(weights, 0)
    total = int(ends[-1])
    if total <= budget:
        return [(0, n)]
    marks = torch.arange(budget, total, budget, device=weights.device)
    cuts = (torch.searchsorted(ends, marks, right=True)).clamp(1, n).tolist()
    bounds = sorted({0, n, *cuts})
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _face_albedo(mesh: trimesh.Trimesh, use_colors: bool) -> np.ndarray:
    n = len(mesh.faces)
    if use_colors:
        try:
            colors = np.asarray(mesh.visual.face_colors)
        except Exception:  # noqa: BLE001
            colors = None
        if colors is not None and colors.shape[0] == n and colors.shape[1] >= 3:
            return colors[:, :3].astype(np.float32) / 255.0
    return np.full((n, 3), GREY_ALBEDO, dtype=np.float32)


def render_views(
    mesh: trimesh.Trimesh,
    size: int = 224,
    protocol: ViewProtocol = ViewProtocol(),
    use_colors: bool = False,
    device: str | torch.device = "cpu",
    variation: ViewVariation | None = None,
) -> np.ndarray:
    """Render the (already normalised) mesh from ``protocol.num_views`` cameras.

    Returns uint8 (V, size, size, 3): view k at azimuth ``k*360/V`` degrees,
    z-buffered, flat two-sided Lambertian shading (headlight + key light +
    ambient), white background. Grey by default; with ``use_colors`` the
    per-face RGBA ``mesh.visual.face_colors`` are the albedo. With `variation`, each view's camera, lights and
    background vary as a ViewVariation says.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    device = torch.device(device)
    dtype = torch.float32
    V = protocol.num_views
    res = size * SUPERSAMPLE

    verts = torch.as_tensor(np.asarray(mesh.vertices, dtype=np.float32), device=device).reshape(-1, 3)
    faces_np = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces_np) == 0 or len(verts) == 0:
        return np.full((V, size, size, 3), BACKGROUND, dtype=np.uint8)
    faces = torch.as_tensor(faces_np, device=device)
    verts = _to_z_up(verts, protocol.up_axis)
    draws = _draw_variation(variation, V) if variation is not None else None
    centre, right, up, forward = _camera_frames(protocol, dtype, device, draws)

    # view-space coordinates (V, N)
    rel = verts[None, :, :] - centre[:, None, :]
    xc = torch.einsum("vnk,vk->vn", rel, right)
    yc = torch.einsum("vnk,vk->vn", rel, up)
    zc = torch.einsum("vnk,vk->vn", rel, forward)
    near = 1e-3 * protocol.distance
    focal = 0.5 * res / math.tan(math.radians(protocol.fov_deg) / 2.0)
    zsafe = zc.clamp(min=near)
    sx = 0.5 * res + focal * xc / zsafe
    sy = 0.5 * res - focal * yc / zsafe
    inv_z = 1.0 / zsafe
    # triangles touching the near plane are dropped (cannot happen for a normalised mesh)
    vert_ok = (zc > near) & torch.isfinite(sx) & torch.isfinite(sy)
    valid = vert_ok.index_select(1, faces.reshape(-1)).view(V, -1, 3).all(-1)

    # (V, res, res) winning face per pixel, F = background; views in groups to bound memory
    group = max(1, TRIANGLES_PER_PASS // faces.shape[0])
    winner = torch.cat(
        [
            _rasterize(sx[g : g + group], sy[g : g + group], inv_z[g : g + group], faces, valid[g : g + group], res)
            for g in range(0, V, group)
        ]
    )

    # flat shading, once per (view, face)
    tri = verts.index_select(0, faces.reshape(-1)).view(-1, 3, 3)  # (F, 3, 3)
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal = normal / normal.norm(dim=1, keepdim=True).clamp(min=1e-20)  # degenerate -> ~0 (ambient only)
    centroid = tri.mean(dim=1)
    to_cam = centre[:, None, :] - centroid[None, :, :]  # (V, F, 3)
    to_cam = to_cam / to_cam.norm(dim=-1, keepdim=True).clamp(min=1e-20)
    # two-sided: flip each normal to face the camera (per-face direction, exact under perspective)
    facing = (normal[None] * to_cam).sum(-1)  # (V, F)
    n_oriented = normal[None] * torch.where(facing < 0, -1.0, 1.0)[..., None]
    # directional lights fixed to each camera, so coplanar triangles shade identically:
    # a headlight along the view axis and a key light from above-left
    head = (n_oriented * (-forward)[:, None, :]).sum(-1).clamp(min=0.0)
    if draws is None:
        key_dir = -forward + 0.6 * up - 0.5 * right
    else:  # a key light from a random direction of the camera's hemisphere, per view
        la, le = draws["light_azimuth"].to(device, dtype)[:, None], draws["light_elevation"].to(device, dtype)[:, None]
        key_dir = -forward * torch.cos(le) * torch.cos(la) + right * torch.cos(le) * torch.sin(la) + up * torch.sin(le)
    key_dir = key_dir / key_dir.norm(dim=1, keepdim=True)
    key = (n_oriented * key_dir[:, None, :]).sum(-1).clamp(min=0.0)
    if draws is None:
        intensity = (AMBIENT + HEADLIGHT * head + KEY_LIGHT * key).clamp(max=1.0)  # (V, F)
    else:
        scale = draws["intensity"].to(device, dtype)[:, None]
        ambient = AMBIENT * draws["ambient"].to(device, dtype)[:, None]
        intensity = (ambient + scale * (HEADLIGHT * head + KEY_LIGHT * key)).clamp(max=1.0)
    albedo = torch.as_tensor(_face_albedo(mesh, use_colors), device=device)
    color = intensity[..., None] * albedo[None]  # (V, F, 3)

    Fn = faces.shape[0]
    bg = torch.full((V, 1, 3), BACKGROUND / 255.0, dtype=dtype, device=device)
    flat_color = torch.cat([color, bg], dim=1).reshape(-1, 3)  # per view: F face colours + background
    idx = winner + (torch.arange(V, device=device) * (Fn + 1))[:, None, None]
    img = flat_color.index_select(0, idx.reshape(-1))  # (V*res*res, 3)
    if draws is not None and variation.clutter >= 0:  # textured, cluttered backgrounds where no face won
        empty = (winner == Fn).reshape(V, -1)
        scenes = _backgrounds(draws, V, res, variation.clutter, device).to(dtype)
        img = torch.where(empty.reshape(-1, 1), scenes.reshape(-1, 3), img)
    if SUPERSAMPLE > 1:  # box-filter down: sum the s*s strided sub-images
        s = SUPERSAMPLE
        sub = img.view(V, size, s, size, s, 3)
        img = sum(sub[:, :, i, :, j] for i in range(s) for j in range(s)) / float(s * s)
    else:
        img = img.view(V, size, size, 3)
    return (img * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def render_mesh_file(
    path: str | Path,
    size: int = 224,
    protocol: ViewProtocol = ViewProtocol(),
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """`load_mesh` + `normalize_to_unit_sphere` + grey `render_views`."""
    mesh = normalize_to_unit_sphere(load_mesh(path))
    return render_views(mesh, size=size, protocol=protocol, use_colors=False, device=device)
