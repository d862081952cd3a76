"""Procedurally generated 3-D objects in shape families: the built-in synthetic dataset.

Every family is a function ``rng -> trimesh.Trimesh`` that draws one *instance* of
its category: the overall shape is shared by the whole family (a mug is a
thin-walled cylinder with a handle, a chair is a seat, four legs and a back) while
proportions, part counts and part options vary from instance to instance, so that
instances of a category are confusable.  Some categories are deliberately close to
each other (table / desk / stool / bench, bottle / vase, mug / cup / bowl / teapot,
sofa / bed) so that category recognition is not trivial either.

Colour never identifies a category: every family draws its colours from the same
palette of muted colours (with a small per-instance jitter), one to three colours
per object (legs vs seat, body vs cap, ...).

Conventions of every generated mesh:

* z is up and the object stands on z = 0, centred on the z axis (bounding box);
  the renderer re-centres and rescales to the unit sphere anyway;
* one ``trimesh.Trimesh`` built from simple closed primitives (revolved profiles,
  boxes, rounded boxes, tubes swept along paths), with outward face winding;
* ``mesh.visual.face_colors`` set, RGBA uint8 per face;
* between 300 and 5000 faces;
* not rotationally symmetric about z for almost all instances (handles, chair
  backs, lamp arms, spouts, drawers, ...), so the 12 views around the up axis differ.

Determinism: `make_object(category, seed)` seeds ``np.random.default_rng`` with the
seed and a CRC-32 of the category name (never Python's salted ``hash``) and uses
that generator only, so the same pair gives the same arrays on every machine.
"""

from __future__ import annotations

import contextvars
import zlib
from collections.abc import Callable

import numpy as np
import trimesh

__all__ = ["SHAPE_FAMILIES", "PALETTE", "make_object", "category_names"]

MIN_FACES = 300
MAX_FACES = 5000

# One palette for every category (muted colours), RGB.
PALETTE = np.array(
    [
        [170, 82, 70],  # brick
        [201, 163, 90],  # ochre
        [118, 146, 102],  # sage
        [82, 112, 152],  # slate blue
        [134, 96, 140],  # plum
        [142, 104, 72],  # walnut
        [214, 206, 188],  # cream
        [80, 82, 88],  # charcoal
    ],
    dtype=np.float64,
)

_TAU = 2.0 * np.pi

# --------------------------------------------------------------------------------------
# Geometry helpers.  A part is a pair (V, F): float (n, 3) vertices, int (m, 3) faces
# with outward (counter-clockwise) winding.  Vertices are never merged between parts.
# --------------------------------------------------------------------------------------

Part = tuple[np.ndarray, np.ndarray]

_BOX = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
_BOX_V = np.asarray(_BOX.vertices, dtype=np.float64)
_BOX_F = np.asarray(_BOX.faces, dtype=np.int64)
_ICO = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
_ICO_V = np.asarray(_ICO.vertices, dtype=np.float64)
_ICO_F = np.asarray(_ICO.faces, dtype=np.int64)


def _signed_volume(V: np.ndarray, F: np.ndarray) -> float:
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _revolve(profile, sections: int = 32, angle: float | None = None, start: float = 0.0, seg_ids: bool = False):
    """Revolve a 2-D (r, z) polyline about the z axis (like `trimesh.creation.revolve`).

    A profile that starts and ends on the axis and runs counter-clockwise in the
    (r, z) half plane gives a closed solid with outward normals.  `angle` None is a
    full turn; otherwise an open sector from `start` to `start + angle`.
    With `seg_ids` also returns, per face, the index of the profile segment it came from.
    """
    prof = np.asarray(profile, dtype=np.float64)
    n = len(prof)
    full = angle is None
    if full:
        th = start + np.arange(sections) * (_TAU / sections)
    else:
        th = start + np.linspace(0.0, float(angle), sections + 1)
    nring = len(th)
    V = np.empty((nring, n, 3))
    V[..., 0] = np.cos(th)[:, None] * prof[None, :, 0]
    V[..., 1] = np.sin(th)[:, None] * prof[None, :, 0]
    V[..., 2] = prof[None, :, 1]
    j = np.arange(sections)[:, None]
    jn = (j + 1) % nring
    i = np.arange(n - 1)[None, :]
    a, b, c, d = j * n + i, jn * n + i, j * n + i + 1, jn * n + i + 1
    t1 = np.stack([a, b, c], axis=-1)
    t2 = np.stack([c, b, d], axis=-1)
    k1 = np.broadcast_to(prof[:-1, 0] > 1e-9, (sections, n - 1))
    k2 = np.broadcast_to(prof[1:, 0] > 1e-9, (sections, n - 1))
    segs = np.broadcast_to(np.arange(n - 1), (sections, n - 1))
    F = np.concatenate([t1[k1], t2[k2]]).astype(np.int64)
    V = V.reshape(-1, 3)
    if seg_ids:
        return V, F, np.concatenate([segs[k1], segs[k2]])
    return V, F


def _tube(path, radius, sections: int = 10, caps: bool = True) -> Part:
    """Sweep a circle along a 3-D polyline (parallel-transport frames), optionally capped."""
    P = np.asarray(path, dtype=np.float64)
    n = len(P)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (n,))
    T = np.gradient(P, axis=0)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(T[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    N = np.empty_like(P)
    cur = ref - T[0] * (ref @ T[0])
    for k in range(n):
        if k:
            cur = N[k - 1] - T[k] * (N[k - 1] @ T[k])
            if np.linalg.norm(cur) < 1e-9:  # tangent flipped: pick anything perpendicular
                cur = np.cross(T[k], [1.0, 0.0, 0.0]) if abs(T[k, 0]) < 0.9 else np.cross(T[k], [0.0, 1.0, 0.0])
        cur = cur / np.linalg.norm(cur)
        N[k] = cur
    B = np.cross(T, N)
    phi = np.arange(sections) * (_TAU / sections)
    ring = P[:, None, :] + r[:, None, None] * (
        np.cos(phi)[None, :, None] * N[:, None, :] + np.sin(phi)[None, :, None] * B[:, None, :]
    )
    V = ring.reshape(-1, 3)
    i = np.arange(n - 1)[:, None]
    j = np.arange(sections)[None, :]
    jn = (j + 1) % sections
    a, b, c, d = i * sections + j, i * sections + jn, (i + 1) * sections + j, (i + 1) * sections + jn
    F = [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([c, b, d], -1).reshape(-1, 3)]
    if caps:
        c0, c1 = len(V), len(V) + 1
        V = np.vstack([V, P[0], P[-1]])
        jj = np.arange(sections)
        jjn = (jj + 1) % sections
        F.append(np.stack([np.full(sections, c0), jjn, jj], -1))
        last = (n - 1) * sections
        F.append(np.stack([np.full(sections, c1), last + jj, last + jjn], -1))
    return V, np.concatenate(F).astype(np.int64)


def _rod(p0, p1, radius, sections: int = 12) -> Part:
    """A capped cylinder between two points."""
    return _tube(np.array([p0, p1], dtype=np.float64), radius, sections=sections)


def _box(extents, center=(0.0, 0.0, 0.0)) -> Part:
    return _BOX_V * np.asarray(extents, dtype=np.float64) + np.asarray(center, dtype=np.float64), _BOX_F.copy()


# Template for rounded boxes: a UV sphere whose coordinates are later pushed to a superellipsoid.
_SPH_V, _SPH_F = _revolve(np.column_stack([np.sin(np.linspace(0, np.pi, 9)), -np.cos(np.linspace(0, np.pi, 9))]), sections=16)
_SPH_V = np.clip(_SPH_V, -1.0, 1.0)


def _rbox(extents, center=(0.0, 0.0, 0.0), p: float = 0.25) -> Part:
    """A rounded box (superellipsoid): `p` 1 is an ellipsoid, ~0.1 an almost sharp box."""
    V = np.sign(_SPH_V) * np.abs(_SPH_V) ** p * (0.5 * np.asarray(extents, dtype=np.float64))
    return V + np.asarray(center, dtype=np.float64), _SPH_F.copy()


def _hexa(corners, p: float | None = None) -> Part:
    """A (rounded, with `p`) box whose 8 corners are given as (2, 2, 2, 3) indexed [ix, iy, iz].

    Trilinear map of the unit cube, so slabs can be tapered, swept and sheared
    (wings, tapered legs, car cabins).  Winding is fixed up for mirrored corners.
    """
    C = np.asarray(corners, dtype=np.float64)
    if p is None:
        U, F = _BOX_V + 0.5, _BOX_F.copy()
    else:
        U, F = np.sign(_SPH_V) * np.abs(_SPH_V) ** p * 0.5 + 0.5, _SPH_F.copy()
    x, y, z = U[:, 0:1], U[:, 1:2], U[:, 2:3]
    V = np.zeros((len(U), 3))
    for ix, wx in ((0, 1 - x), (1, x)):
        for iy, wy in ((0, 1 - y), (1, y)):
            for iz, wz in ((0, 1 - z), (1, z)):
                V += wx * wy * wz * C[ix, iy, iz]
    if _signed_volume(V, F) < 0:
        F = F[:, ::-1].copy()
    return V, F


def _slab(p0, p1, width: float, thick: float, up=(0.0, 0.0, 1.0)) -> Part:
    """A box-section beam from p0 to p1 (square legs, rails, slats at any angle)."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    ax = p1 - p0
    ax /= np.linalg.norm(ax)
    up = np.asarray(up, dtype=np.float64)
    if abs(ax @ up) > 0.95:
        up = np.array([1.0, 0.0, 0.0]) if abs(ax[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    s = np.cross(ax, up)
    s /= np.linalg.norm(s)
    t = np.cross(s, ax)
    C = np.empty((2, 2, 2, 3))
    for ia, pa in enumerate((p0, p1)):
        for i_s, ss in enumerate((-0.5, 0.5)):
            for it, tt in enumerate((-0.5, 0.5)):
                C[ia, i_s, it] = pa + ss * width * s + tt * thick * t
    return _hexa(C)


def _ball(radius: float, center) -> Part:
    return _ICO_V * radius + np.asarray(center, dtype=np.float64), _ICO_F.copy()


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _align(a, b) -> np.ndarray:
    """Rotation taking unit vector a onto unit vector b."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:
        perp = np.cross(a, [1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.cross(a, [0.0, 1.0, 0.0])
        perp /= np.linalg.norm(perp)
        return 2 * np.outer(perp, perp) - np.eye(3)
    K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + K + K @ K / (1 + c)


def _xf(part: Part, R=None, t=None, s=None) -> Part:
    """Scale (per axis), then rotate, then translate a part; keeps winding outward."""
    V, F = part
    V = V.copy()
    if s is not None:
        s = np.broadcast_to(np.asarray(s, dtype=np.float64), (3,))
        V = V * s
        if np.prod(s) < 0:
            F = F[:, ::-1].copy()
    if R is not None:
        V = V @ np.asarray(R).T
    if t is not None:
        V = V + np.asarray(t, dtype=np.float64)
    return V, F


def _spline(ctrl, per: int = 6) -> np.ndarray:
    """Catmull-Rom curve through the control points (any dimension)."""
    C = np.asarray(ctrl, dtype=np.float64)
    P = np.vstack([2 * C[0] - C[1], C, 2 * C[-1] - C[-2]])
    t = np.linspace(0.0, 1.0, per, endpoint=False)[:, None]
    out = []
    for k in range(len(C) - 1):
        p0, p1, p2, p3 = P[k : k + 4]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
    out.append(C[-1:])
    return np.vstack(out)


def _bezier(ctrl, n: int = 16) -> np.ndarray:
    """Points of the Bezier curve with these control points (de Casteljau)."""
    C = [np.asarray(q, dtype=np.float64) for q in ctrl]
    t = np.linspace(0.0, 1.0, n)[:, None]
    while len(C) > 1:
        C = [(1 - t) * C[i] + t * C[i + 1] for i in range(len(C) - 1)]
    return np.broadcast_to(C[0], (n, len(ctrl[0]))).copy()


def _vessel(outer, thick: float, sections: int = 40):
    """Thin-walled open vessel from its outer (r, z) curve, which runs from the axis at the
    bottom, outwards and up to the rim.  Returns (V, F, inner_face_mask)."""
    out = np.asarray(outer, dtype=np.float64)
    seg = np.diff(out, axis=0)
    seg /= np.linalg.norm(seg, axis=1, keepdims=True)
    nseg = np.column_stack([-seg[:, 1], seg[:, 0]])  # left normals: into the cavity
    vn = np.empty_like(out)
    vn[0], vn[-1] = nseg[0], nseg[-1]
    vn[1:-1] = nseg[:-1] + nseg[1:]
    vn /= np.linalg.norm(vn, axis=1, keepdims=True)
    mit = np.ones(len(out))
    mit[1:-1] = 1.0 / np.maximum(np.einsum("ij,ij->i", vn[1:-1], nseg[1:]), 0.6)
    inner = out + thick * vn * mit[:, None]
    inner[0, 0] = 0.0
    inner[1:, 0] = np.maximum(inner[1:, 0], 0.3 * out[1:, 0])
    prof = np.vstack([out, inner[::-1]])
    V, F, seg_id = _revolve(prof, sections=sections, seg_ids=True)
    return V, F, seg_id >= len(out)


def _spout(V: np.ndarray, top: float, depth: float, amount: float, theta0: float = 0.0, power: float = 6.0):
    """Pull the rim of a revolved vessel out (and up) around angle theta0: a pouring lip."""
    z = V[:, 2]
    w = np.clip((z - (top - depth)) / depth, 0.0, 1.0) ** 2
    ang = np.arctan2(V[:, 1], V[:, 0]) - theta0
    wa = np.maximum(np.cos(ang), 0.0) ** power
    r = np.hypot(V[:, 0], V[:, 1])
    push = amount * w * wa
    scale = np.where(r > 1e-9, (r + push) / np.maximum(r, 1e-9), 1.0)
    V[:, 0] *= scale
    V[:, 1] *= scale
    V[:, 2] += 0.35 * push


def _panel(r0: float, r1: float, z0: float, z1: float, d: float, start: float, span: float, sections: int = 24) -> Part:
    """A raised curved panel on a body of revolution (a bottle label): radii r0 at z0 and r1
    at z1 on the body, `d` thick, covering `span` radians from `start`.  Closed, outward."""
    prof = [(r0 - 0.001, z0), (r0 + d, z0), (r1 + d, z1), (r1 - 0.001, z1)]
    V, F = _revolve(prof + prof[:1], sections=sections, angle=span, start=start)
    n = len(prof) + 1
    caps = []
    for ring, sign in ((0, -1.0), (sections, 1.0)):
        a = ring * n
        tri = np.array([[a, a + 1, a + 2], [a, a + 2, a + 3]])
        nrm = np.cross(V[tri[0, 1]] - V[tri[0, 0]], V[tri[0, 2]] - V[tri[0, 0]])
        th = start + (span if ring else 0.0)
        tangent = np.array([-np.sin(th), np.cos(th), 0.0]) * sign
        caps.append(tri if nrm @ tangent > 0 else tri[:, ::-1])
    F = np.vstack([F, *caps])
    if _signed_volume(V, F) < 0:
        F = F[:, ::-1].copy()
    return V, F


# --------------------------------------------------------------------------------------
# Assembling parts with colours
# --------------------------------------------------------------------------------------


# With family colours (make_object(..., family_colours=True)) the palette choice comes from a generator seeded by the
# category alone, so every instance of a family wears the same colour scheme and colour cannot tell them apart.
_FAMILY_COLOURS: contextvars.ContextVar[np.random.Generator | None] = contextvars.ContextVar("family_colours", default=None)


def _colours(rng: np.random.Generator, k: int = 3) -> list[np.ndarray]:
    """k distinct palette colours with a small per-instance jitter (the choice shared by the family, with
    family colours)."""
    scheme = _FAMILY_COLOURS.get()
    idx = (scheme if scheme is not None else rng).choice(len(PALETTE), size=k, replace=False)
    jit = rng.uniform(-10.0, 10.0, size=(k, 3))
    return [np.clip(PALETTE[i] + jit[n], 0, 255) for n, i in enumerate(idx)]


class _Parts:
    def __init__(self) -> None:
        self.V: list[np.ndarray] = []
        self.F: list[np.ndarray] = []
        self.C: list[np.ndarray] = []
        self.n = 0

    def add(self, part: Part, colour) -> None:
        V, F = part
        c = np.asarray(colour, dtype=np.float64)
        if c.ndim == 1:
            c = np.broadcast_to(c, (len(F), 3))
        self.V.append(np.asarray(V, dtype=np.float64))
        self.F.append(np.asarray(F, dtype=np.int64) + self.n)
        self.C.append(c)
        self.n += len(V)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.vstack(self.V), np.vstack(self.F), np.vstack(self.C)

    def mesh(self, turn: float = 0.0) -> trimesh.Trimesh:
        """One mesh of all parts; `turn` rotates it about z (furniture is built facing +y,
        turned by pi so that its front faces -y, the side view 0 of the renderer looks at)."""
        V, F, C = self.arrays()
        if turn:
            V = V @ _rot("z", turn).T
        rgba = np.empty((len(F), 4), dtype=np.uint8)
        rgba[:, :3] = np.clip(np.round(C), 0, 255).astype(np.uint8)
        rgba[:, 3] = 255
        return trimesh.Trimesh(vertices=V, faces=F, face_colors=rgba, process=False)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _p(rng: np.random.Generator, prob: float) -> bool:
    return bool(rng.random() < prob)


def _pick(rng: np.random.Generator, options, probs=None):
    return options[int(rng.choice(len(options), p=probs))]


# --------------------------------------------------------------------------------------
# Tableware: mug, cup, bowl, teapot, bottle, vase
# --------------------------------------------------------------------------------------


def _loop_handle(rad_at, z_top: float, z_bot: float, proj: float, thick: float, q: float, theta: float = 0.0) -> Part:
    """A C/D-shaped handle in the vertical plane at angle theta, ends sunk into a body of radius rad_at(z)."""
    phi = np.linspace(np.pi / 2, -np.pi / 2, 23)
    zc, b = 0.5 * (z_top + z_bot), 0.5 * (z_top - z_bot)
    s = np.sin(phi)
    z = zc + b * np.sign(s) * np.abs(s) ** q
    x = np.array([rad_at(zz) for zz in z]) - 0.8 * thick + proj * np.abs(np.cos(phi)) ** q
    path = np.column_stack([x, np.zeros_like(x), z])
    return _xf(_tube(path, thick, sections=10), R=_rot("z", theta))


def _mug(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    R, H = _u(rng, 0.036, 0.05), _u(rng, 0.08, 0.12)
    top = R * _u(rng, 0.85, 1.15)
    bulge = R * _pick(rng, [0.0, _u(rng, -0.06, 0.14)])
    t, bev = _u(rng, 0.0035, 0.0065), _u(rng, 0.002, 0.008)

    def rad(z):
        s = z / H
        return R + (top - R) * s + bulge * np.sin(np.pi * s)

    zs = np.linspace(bev, H, 9)
    outer = [(0.0, 0.0), (R - bev, 0.0)] + [(rad(z), z) for z in zs]
    V, F, inner = _vessel(outer, t)
    inside = c[0] if _p(rng, 0.5) else c[2]
    P.add((V, F), np.where(inner[:, None], inside, c[0]))
    if _p(rng, 0.3):  # a painted band
        z0 = H * _u(rng, 0.2, 0.6)
        band = _revolve(
            [(rad(z0) + 0.0008, z0), (rad(z0 + 0.012) + 0.0008, z0 + 0.012)], sections=40, angle=_TAU - 0.8, start=0.4
        )
        P.add(band, c[1])
    z_top, z_bot = H * _u(rng, 0.7, 0.88), H * _u(rng, 0.12, 0.35)
    handle = _loop_handle(rad, z_top, z_bot, _u(rng, 0.022, 0.04), _u(rng, 0.004, 0.008), _pick(rng, [1.0, 0.6, 0.35]))
    P.add(handle, c[0] if _p(rng, 0.7) else c[1])
    return P.mesh()


def _cup(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    Rf, Rr, H = _u(rng, 0.02, 0.03), _u(rng, 0.042, 0.056), _u(rng, 0.045, 0.07)
    gamma, flare, fh = _u(rng, 0.4, 0.85), _u(rng, 0.0, 0.005), _u(rng, 0.004, 0.008)
    t = _u(rng, 0.0025, 0.0045)
    base = 0.0
    if _p(rng, 0.55):  # saucer
        Rs = _u(rng, 0.065, 0.085)
        st = _u(rng, 0.005, 0.008)
        saucer = [
            (0, 0),
            (Rs * 0.5, 0),
            (Rs * 0.8, st * 0.8),
            (Rs, st * 2.2),
            (Rs * 0.99, st * 2.8),
            (Rs * 0.78, st * 1.7),
            (Rs * 0.5, st),
            (0, st),
        ]
        P.add(_revolve(saucer, sections=40), c[0] if _p(rng, 0.6) else c[2])
        base = st
    P.add(_revolve([(0, base), (Rf, base), (Rf * 1.05, base + fh), (0, base + fh)], sections=32), c[0])
    Rb = Rf * 1.05
    z0 = base + fh

    def rad(z):
        s = np.clip((z - z0) / H, 0.0, 1.0)
        return Rb + (Rr - Rb) * s**gamma + flare * s**6

    ss = np.linspace(0.0, 1.0, 11)[1:] ** 1.5
    outer = [(0.0, z0), (Rb, z0)] + [(rad(z0 + s * H), z0 + s * H) for s in ss]
    V, F, inner = _vessel(outer, t)
    inside = c[0] if _p(rng, 0.4) else c[2]
    P.add((V, F), np.where(inner[:, None], inside, c[0]))
    zc = z0 + H * _u(rng, 0.5, 0.72)
    if _p(rng, 0.5):  # ring handle
        rh, th = _u(rng, 0.009, 0.016), _u(rng, 0.003, 0.005)
        phi = np.linspace(0, _TAU, 33)
        x0 = rad(zc) + rh * _u(rng, 0.6, 0.9)
        path = np.column_stack([x0 + rh * np.cos(phi + np.pi), np.zeros_like(phi), zc + rh * 1.1 * np.sin(phi + np.pi)])
        P.add(_tube(path, th, sections=8), c[0] if _p(rng, 0.7) else c[1])
    else:  # ear handle
        hh = H * _u(rng, 0.25, 0.4)
        P.add(
            _loop_handle(
                rad, min(zc + hh, z0 + 0.95 * H), zc - hh, _u(rng, 0.012, 0.022), _u(rng, 0.003, 0.005), _pick(rng, [1.0, 0.7])
            ),
            c[0] if _p(rng, 0.7) else c[1],
        )
    return P.mesh()


def _bowl(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    R = _u(rng, 0.06, 0.1)
    D, Rb, gamma = R * _u(rng, 0.38, 0.62), R * _u(rng, 0.35, 0.55), _u(rng, 0.5, 1.0)
    t = _u(rng, 0.004, 0.008)
    z0 = 0.0
    if _p(rng, 0.6):
        fh = _u(rng, 0.004, 0.01)
        P.add(_revolve([(0, 0), (Rb * 0.9, 0), (Rb * 0.95, fh), (0, fh)], sections=40), c[0])
        z0 = fh

    def rad(z):
        s = np.clip((z - z0) / D, 0.0, 1.0)
        return Rb + (R - Rb) * np.sin(s * np.pi / 2) ** gamma

    ss = np.linspace(0.0, 1.0, 11)[1:]
    outer = [(0.0, z0), (Rb, z0)] + [(rad(z0 + s * D), z0 + s * D) for s in ss]
    V, F, inner = _vessel(outer, t)
    feature = _pick(rng, ["spout", "tabs2", "tab1", "handle", "spout_tab"])
    if feature.startswith("spout"):
        _spout(V, z0 + D, D * _u(rng, 0.3, 0.5), R * _u(rng, 0.12, 0.22), power=_u(rng, 4, 10))
    inside = c[0] if _p(rng, 0.5) else c[2]
    P.add((V, F), np.where(inner[:, None], inside, c[0]))
    top = z0 + D
    if feature in ("tabs2", "tab1", "spout_tab"):
        angles = {"tabs2": [0.0, np.pi], "tab1": [0.0], "spout_tab": [np.pi]}[feature]
        out, wid, th = R * _u(rng, 0.18, 0.32), R * _u(rng, 0.3, 0.5), _u(rng, 0.004, 0.007)
        for a in angles:
            tab = _rbox((out + 2 * t, wid, th), (R + out / 2 - t, 0, top - th / 2), p=0.4)
            P.add(_xf(tab, R=_rot("z", a)), c[0])
    elif feature == "handle":
        L = R * _u(rng, 0.6, 1.1)
        th = _u(rng, 0.005, 0.008)
        path = np.column_stack(
            [np.linspace(R - 2 * t, R + L, 12), np.zeros(12), top - th - np.linspace(0, 1, 12) ** 2 * D * 0.15]
        )
        P.add(_tube(path, th, sections=10), c[0] if _p(rng, 0.5) else c[1])
    return P.mesh()


def _teapot(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    R = _u(rng, 0.07, 0.1)
    Hb, Rb, Rl = R * _u(rng, 0.9, 1.5), R * _u(rng, 0.55, 0.8), R * _u(rng, 0.4, 0.6)
    belly = _u(rng, 0.35, 0.55)
    ctrl = [(Rb, 0.0), (R * 0.93, Hb * belly * 0.45), (R, Hb * belly), (R * 0.82, Hb * 0.82), (Rl, Hb)]
    curve = _spline(ctrl, per=5)
    body = np.vstack([[0.0, 0.0], curve, [0.0, Hb]])
    P.add(_revolve(body, sections=40), c[0])
    hl = R * _u(rng, 0.15, 0.35)
    lid = _spline([(Rl * 1.06, Hb), (Rl * 0.9, Hb + hl * 0.5), (Rl * 0.45, Hb + hl * 0.9), (Rl * 0.15, Hb + hl)], per=4)
    P.add(
        _revolve(np.vstack([[0.0, Hb - 0.002], [Rl * 1.06, Hb - 0.002], lid, [0.0, Hb + hl]]), sections=32),
        c[0] if _p(rng, 0.6) else c[1],
    )
    knob_c = c[0] if _p(rng, 0.5) else c[1]
    kr = R * _u(rng, 0.08, 0.14)
    P.add(_ball(kr, (0, 0, Hb + hl + kr * 0.7)), knob_c)

    def rad(z):
        return float(np.interp(z, curve[:, 1], curve[:, 0]))

    # spout at +x
    Ls = R * _u(rng, 0.5, 0.9)
    zs0, zs1 = Hb * _u(rng, 0.2, 0.35), Hb * _u(rng, 0.8, 1.1)
    curl = _u(rng, 0.0, 0.4)
    sp = _bezier(
        [
            (rad(zs0) * 0.7, 0, zs0),
            (R + Ls * 0.5, 0, zs0 + (zs1 - zs0) * 0.1),
            (R + Ls * (0.8 - curl * 0.3), 0, zs1 * 0.8),
            (R + Ls, 0, zs1),
        ],
        16,
    )
    P.add(_tube(sp, np.linspace(R * _u(rng, 0.18, 0.26), R * _u(rng, 0.07, 0.11), 16), sections=12), c[0])
    if _p(rng, 0.65):  # side loop handle at -x
        hand = _loop_handle(
            rad,
            Hb * _u(rng, 0.75, 0.9),
            Hb * _u(rng, 0.2, 0.35),
            R * _u(rng, 0.3, 0.5),
            R * _u(rng, 0.05, 0.08),
            _pick(rng, [1.0, 0.6, 0.4]),
            np.pi,
        )
        P.add(hand, c[0] if _p(rng, 0.6) else c[1])
    else:  # bail handle over the lid
        zb = Hb * 0.85
        yb = rad(zb) * 0.85
        apex = Hb + hl + R * _u(rng, 0.4, 0.7)
        phi = np.linspace(0.0, np.pi, 21)
        path = np.column_stack([np.zeros_like(phi), -yb * np.cos(phi), zb + (apex - zb) * np.sin(phi) ** 0.7])
        P.add(_tube(path, R * _u(rng, 0.035, 0.055), sections=8), c[1] if _p(rng, 0.6) else c[2])
    return P.mesh()


def _bottle(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    R, Hb = _u(rng, 0.028, 0.045), _u(rng, 0.11, 0.2)
    Hs = Hb * _u(rng, 0.12, 0.4)
    rn, Ln = R * _u(rng, 0.28, 0.45), _u(rng, 0.015, 0.07)
    k = _u(rng, 0.5, 2.2)
    body_taper = _u(rng, 0.92, 1.06)
    pts = [(0.0, 0.0), (R * 0.92, 0.0), (R * body_taper, 0.012)]
    pts += [(R * (body_taper + (1 - body_taper) * s), 0.012 + s * (Hb - Hs - 0.012)) for s in np.linspace(0.25, 1.0, 4)]
    for s in np.linspace(0.0, 1.0, 9)[1:]:
        pts.append((rn + (R - rn) * np.cos(s * np.pi / 2) ** k, Hb - Hs + s * Hs))
    top = Hb + Ln
    pts += [(rn, Hb + Ln * 0.5), (rn, top), (0.0, top)]
    P.add(_revolve(pts, sections=36), c[0])
    rc, hc = rn * _u(rng, 1.1, 1.35), _u(rng, 0.01, 0.028)
    closure = _pick(rng, ["screw", "pump", "flip"], [0.4, 0.3, 0.3])
    if closure == "pump":
        hc = min(hc, 0.014)
    cap = [(0, top - hc * 0.45), (rc, top - hc * 0.45), (rc, top + hc * 0.5), (rc * 0.9, top + hc * 0.55), (0, top + hc * 0.55)]
    P.add(_revolve(cap, sections=24), c[1])
    ctop = top + hc * 0.55
    if closure == "pump":  # dispenser: stem, head and a sideways nozzle (+x)
        hs, ph = _u(rng, 0.015, 0.035), _u(rng, 0.01, 0.016)
        P.add(_rod((0, 0, ctop - 0.002), (0, 0, ctop + hs), rn * 0.35, 12), c[1])
        hl = _u(rng, 0.02, 0.035)
        P.add(_rbox((hl + rc, rc * 1.3, ph), (hl / 2 - rc * 0.2, 0, ctop + hs + ph / 2), p=0.35), c[1])
        tip = (hl + _u(rng, 0.008, 0.02), 0, ctop + hs + ph * _u(rng, 0.0, 0.4))
        P.add(_rod((hl * 0.6, 0, ctop + hs + ph * 0.5), tip, _u(rng, 0.0025, 0.004), 10), c[1])
    elif closure == "flip":  # open flip-top lid hinged at -x
        lid = _revolve([(0, 0), (rc, 0), (rc, hc * 0.3), (0, hc * 0.3)], sections=24)
        hinge = np.array([-rc, 0.0, ctop])
        P.add(_xf(_xf(lid, t=(rc, 0, 0)), R=_rot("y", -_u(rng, 1.2, 2.0)), t=hinge), c[1])
        P.add(_rod((0, 0, ctop - 0.001), (0, 0, ctop + hc * 0.4), rc * 0.35, 10), c[1])
    if _p(rng, 0.8):  # label: a raised panel not all the way round
        z0, z1 = Hb * _u(rng, 0.12, 0.3), (Hb - Hs) * _u(rng, 0.75, 0.98)
        span = _u(rng, 2.5, 5.0)
        arr = np.asarray(pts)
        rz0, rz1 = (float(np.interp(z, arr[2:-1, 1], arr[2:-1, 0])) for z in (z0, z1))
        P.add(_panel(rz0, rz1, z0, z1, R * _u(rng, 0.02, 0.05), np.pi - span / 2 + _u(rng, -0.5, 0.5), span), c[2])
    if _p(rng, 0.25):  # small jug handle on the shoulder
        zt, zb = Hb - Hs * 0.2, Hb - Hs - R * 0.6

        def rad(z):
            arr = np.asarray(pts)
            return float(np.interp(z, arr[2:-1, 1], arr[2:-1, 0]))

        P.add(_loop_handle(rad, zt, zb, R * _u(rng, 0.4, 0.7), R * 0.12, 0.7), c[0])
    V, F, C = P.arrays()
    ey = 1.0 if _p(rng, 0.6) else _u(rng, 0.55, 0.85)
    V = V * np.array([1.0, ey, 1.0])
    Q = _Parts()
    Q.add((V, F), C)
    return Q.mesh()


def _vase(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    H = _u(rng, 0.2, 0.4)
    rb, rm = _u(rng, 0.04, 0.07), _u(rng, 0.07, 0.13)
    hm = H * _u(rng, 0.25, 0.55)
    rw = _u(rng, 0.03, rm * 0.7)
    hw = H * _u(rng, 0.72, 0.87)
    rl = rw * _u(rng, 1.0, 1.8)
    t = _u(rng, 0.004, 0.008)
    curve = _spline([(rb, 0.0), (rb * 1.05, H * 0.04), (rm, hm), (rw, hw), (rl, H)], per=5)
    outer = np.vstack([[0.0, 0.0], curve])
    V, F, inner = _vessel(outer, t, sections=36)
    handles = int(rng.choice(3, p=[0.4, 0.3, 0.3]))
    if handles == 0 or (handles == 1 and _p(rng, 0.5)):
        _spout(V, H, H * _u(rng, 0.15, 0.3), rl * _u(rng, 0.35, 0.7), theta0=0.0 if handles == 0 else -np.pi / 2)
    inside = c[0] if _p(rng, 0.5) else c[2]
    P.add((V, F), np.where(inner[:, None], inside, c[0]))
    if _p(rng, 0.35):  # painted band
        zb = _u(rng, hm, hw - 0.01)
        r0 = float(np.interp(zb, curve[:, 1], curve[:, 0]))
        r1 = float(np.interp(zb + 0.012, curve[:, 1], curve[:, 0]))
        P.add(_revolve([(r0 + 0.001, zb), (r1 + 0.001, zb + 0.012)], sections=40), c[1])

    def rad(z):
        return float(np.interp(z, curve[:, 1], curve[:, 0]))

    for k in range(handles):
        z_top = hw + (H - hw) * _u(rng, 0.1, 0.6)
        z_bot = hm + (hw - hm) * _u(rng, 0.0, 0.5)
        th = _u(rng, 0.006, 0.011)
        zs = np.linspace(z_top, z_bot, 18)
        out = (rm - rw) * _u(rng, 0.3, 0.8) + 0.015
        s = np.linspace(0.0, 1.0, 18)
        x = np.array([rad(z) for z in zs]) - th + out * np.sin(np.pi * s) ** 0.6
        path = np.column_stack([x, np.zeros(18), zs + (z_top - z_bot) * 0.15 * np.sin(np.pi * s)])
        P.add(_xf(_tube(path, th, sections=8), R=_rot("z", np.pi / 2 + k * np.pi)), c[0] if _p(rng, 0.7) else c[1])
    if _p(rng, 0.3):  # flattened (moon-flask like) body
        V, F, C = P.arrays()
        P = _Parts()
        P.add((V * np.array([_u(rng, 0.65, 0.85), 1.0, 1.0]), F), C)
    return P.mesh()


# --------------------------------------------------------------------------------------
# Furniture: chair, stool, table, desk, bench, shelf, sofa, bed, lamp
# --------------------------------------------------------------------------------------


def _leg(p_top, p_bot, style: str, size: float, taper: float = 1.0) -> Part:
    if style == "round":
        return _tube(np.array([p_top, p_bot]), np.array([size, size * taper]), sections=12)
    p_top, p_bot = np.asarray(p_top, dtype=np.float64), np.asarray(p_bot, dtype=np.float64)
    C = np.empty((2, 2, 2, 3))
    for iz, (pp, sz) in enumerate(((p_bot, size * taper), (p_top, size))):
        for ix, sx in enumerate((-1, 1)):
            for iy, sy in enumerate((-1, 1)):
                C[ix, iy, iz] = pp + (sx * sz, sy * sz, 0.0)
    return _hexa(C)


def _chair(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    frame = c[0]
    seat_c = c[0] if _p(rng, 0.5) else c[1]
    W, D, Hs, ts = _u(rng, 0.4, 0.52), _u(rng, 0.38, 0.5), _u(rng, 0.42, 0.48), _u(rng, 0.025, 0.06)
    style = _pick(rng, ["round", "square"])
    lr = _u(rng, 0.012, 0.022)
    taper = _u(rng, 0.6, 1.0)
    splay, ins = _u(rng, 0.0, 0.04), _u(rng, 0.0, 0.03)
    P.add(_rbox((W, D, ts), (0, 0, Hs - ts / 2), p=_u(rng, 0.08, 0.3)), seat_c)
    legs_top, legs_bot = [], []
    for sx in (-1, 1):
        for sy in (-1, 1):
            top = np.array([sx * (W / 2 - ins - lr), sy * (D / 2 - ins - lr), Hs - ts])
            bot = top + (sx * splay, sy * splay, 0.0)
            bot[2] = 0.0
            legs_top.append(top)
            legs_bot.append(bot)
            P.add(_leg(top, bot, style, lr, taper), frame)
    if _p(rng, 0.35):  # stretchers
        h = _u(rng, 0.1, 0.2)
        f = h / (Hs - ts)
        pts = [b + (t - b) * f for t, b in zip(legs_top, legs_bot, strict=True)]  # order: (-,-), (-,+), (+,-), (+,+)
        for a, b in ((0, 1), (2, 3), (1, 3)) if _p(rng, 0.5) else ((0, 1), (2, 3), (0, 2), (1, 3)):
            P.add(_rod(pts[a], pts[b], lr * 0.5, sections=8), frame)
    # the back, built about a pivot at the rear edge of the seat, then tilted backwards
    Hb, tilt = _u(rng, 0.33, 0.55), _u(rng, 0.03, 0.25)
    back = _pick(rng, ["panel", "slats", "rails", "panel_posts"])
    yb = -D / 2 + ins + lr
    xp = W / 2 - ins - lr
    Rt = _rot("x", tilt)
    pivot = np.array([0.0, yb, Hs - ts])

    def put(part):
        return _xf(part, R=Rt, t=pivot)

    tb = _u(rng, 0.015, 0.04)
    if back == "panel":
        h0 = _u(rng, 0.04, 0.15)
        P.add(
            put(_rbox((W * _u(rng, 0.85, 1.0), tb * 1.5, Hb - h0 + ts), (0, 0, h0 + (Hb - h0 + ts) / 2), p=_u(rng, 0.1, 0.5))),
            seat_c,
        )
        if h0 > 0.06:
            for sx in (-1, 1):
                P.add(put(_leg((sx * xp * 0.8, 0, h0 + 0.02), (sx * xp * 0.8, 0, 0), "square", lr * 0.8)), frame)
    else:
        for sx in (-1, 1):
            P.add(put(_leg((sx * xp, 0, Hb + ts), (sx * xp, 0, 0), style, lr)), frame)
        if back == "panel_posts":
            ph = Hb * _u(rng, 0.35, 0.6)
            P.add(put(_rbox((2 * xp, tb, ph), (0, 0, Hb + ts - ph / 2 - 0.01), p=0.2)), seat_c)
        elif back == "slats":
            rail_h = _u(rng, 0.04, 0.09)
            P.add(put(_box((2 * xp, tb, rail_h), (0, 0, Hb + ts - rail_h / 2 - 0.005))), frame)
            n = int(rng.integers(2, 6))
            sw = (2 * xp) / (2 * n + 1) * _u(rng, 0.6, 1.2)
            for k in range(n):
                x = -xp + (2 * xp) * (k + 1) / (n + 1)
                P.add(put(_box((sw, tb * 0.7, Hb - rail_h), (x, 0, ts + (Hb - rail_h) / 2))), frame)
        else:  # horizontal rails
            n = int(rng.integers(2, 5))
            rh = _u(rng, 0.03, 0.07)
            for k in range(n):
                z = ts + Hb * (0.35 + 0.6 * (k + 1) / n) - rh / 2
                P.add(put(_box((2 * xp, tb, rh), (0, 0, z))), frame)
    if _p(rng, 0.25):  # armrests
        ha = _u(rng, 0.18, 0.25)
        for sx in (-1, 1):
            x = sx * (W / 2 - 0.01)
            P.add(_rbox((0.04, D * 0.9, 0.025), (x, -0.03, Hs + ha), p=0.3), frame)
            P.add(_leg((x, D * 0.3, Hs + ha), (x, D * 0.3, Hs - ts / 2), "round", lr * 0.7), frame)
    return P.mesh(turn=np.pi)


def _stool(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    frame = c[0]
    seat_c = c[0] if _p(rng, 0.4) else c[1]
    H, r, ts = _u(rng, 0.45, 0.8), _u(rng, 0.15, 0.21), _u(rng, 0.03, 0.06)
    if _p(rng, 0.7):
        dome = _u(rng, 0.0, 0.02)
        prof = [
            (0, H - ts),
            (r * 0.95, H - ts),
            (r, H - ts * 0.7),
            (r, H - ts * 0.3),
            (r * 0.9, H),
            (r * 0.5, H + dome * 0.8),
            (0, H + dome),
        ]
        P.add(_revolve(prof, sections=36), seat_c)
    else:
        P.add(_rbox((1.8 * r, 1.8 * r, ts), (0, 0, H - ts / 2), p=_u(rng, 0.1, 0.4)), seat_c)
    nl = 4 if _p(rng, 0.6) else 3
    ra = r * _u(rng, 0.55, 0.8)
    rb = ra + H * _u(rng, 0.04, 0.2)
    lr = _u(rng, 0.012, 0.02)
    style = _pick(rng, ["round", "square"])
    th0 = np.pi / nl
    tops, bots = [], []
    for k in range(nl):
        a = th0 + _TAU * k / nl
        d = np.array([np.cos(a), np.sin(a), 0.0])
        top, bot = d * ra + (0, 0, H - ts), d * rb
        tops.append(top)
        bots.append(bot)
        P.add(_leg(top, bot, style, lr, _u(rng, 0.7, 1.0) if k == 0 else 1.0), frame)

    def at(k, h):
        return bots[k] + (tops[k] - bots[k]) * h / (H - ts)

    backrest = H < 0.72 and _p(rng, 0.3)
    rungs = _pick(rng, ["ring", "stagger"]) if backrest else _pick(rng, ["front", "stagger", "front2"])
    if rungs == "ring":
        h = H * _u(rng, 0.25, 0.4)
        rr = float(np.hypot(*at(0, h)[:2]))
        phi = np.linspace(0, _TAU, 41)
        P.add(_tube(np.column_stack([rr * np.cos(phi), rr * np.sin(phi), np.full_like(phi, h)]), lr * 0.6, sections=8), frame)
    elif rungs == "stagger":
        for k in range(nl):
            h = H * _u(rng, 0.18, 0.45)
            P.add(_rod(at(k, h), at((k + 1) % nl, h), lr * 0.6, sections=8), frame)
    else:
        h = H * _u(rng, 0.2, 0.4)
        P.add(_rod(at(0, h), at(1, h), lr * 0.7, sections=8), frame)
        if rungs == "front2":
            h2 = H * _u(rng, 0.12, 0.3)
            P.add(_rod(at(nl // 2, h2), at(nl // 2 + 1, h2), lr * 0.6, sections=8), frame)
    if backrest:
        hb = _u(rng, 0.15, 0.3)
        a0 = np.pi + _u(rng, -0.1, 0.1)
        span = _u(rng, 0.8, 1.6)
        for s in (-1, 1):
            a = a0 + s * span / 3
            p = np.array([np.cos(a), np.sin(a), 0.0]) * r * 0.85
            P.add(_rod(p + (0, 0, H - 0.01), p + (0, 0, H + hb), lr * 0.7, sections=8), frame)
        phi = np.linspace(a0 - span / 2, a0 + span / 2, 15)
        arc = np.column_stack([r * 0.85 * np.cos(phi), r * 0.85 * np.sin(phi), np.full_like(phi, H + hb)])
        P.add(_tube(arc, _u(rng, 0.015, 0.03), sections=10), seat_c)
    return P.mesh()


def _table(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    top_c = c[0]
    frame = c[0] if _p(rng, 0.5) else c[1]
    H, tt = _u(rng, 0.7, 0.77), _u(rng, 0.025, 0.05)
    kind = _pick(rng, ["four", "trestle", "round"], [0.6, 0.15, 0.25])
    if kind == "round":
        Rt = _u(rng, 0.4, 0.6)
        P.add(_revolve([(0, H - tt), (Rt * 0.97, H - tt), (Rt, H - tt * 0.5), (Rt * 0.99, H), (0, H)], sections=48), top_c)
        rp = _u(rng, 0.03, 0.06)
        prof = _spline([(rp * 1.6, 0.08), (rp, H * 0.3), (rp * _u(rng, 0.8, 1.4), H * 0.6), (rp * 1.3, H - tt)], per=5)
        P.add(_revolve(np.vstack([[0, 0.05], prof, [0, H - tt]]), sections=24), frame)
        nf = 3 if _p(rng, 0.7) else 5
        fl = _u(rng, 0.22, 0.35)
        for k in range(nf):
            a = _TAU * k / nf + _u(rng, -0.05, 0.05)
            d = np.array([np.cos(a), np.sin(a), 0.0])
            P.add(_slab((0, 0, 0.1) + d * 0.01, d * fl + (0, 0, 0.02), 0.05, 0.04), frame)
        if _p(rng, 0.5):  # small drawer/knob under one side
            P.add(_box((0.2, 0.1, 0.06), (Rt * 0.45, 0, H - tt - 0.03)), frame)
            P.add(_ball(0.012, (Rt * 0.45 + 0.055, 0, H - tt - 0.03)), c[2])
        return P.mesh(turn=np.pi)
    L = _u(rng, 0.9, 1.8)
    Wd = min(_u(rng, 0.6, 0.95), 0.9 * L)
    P.add(_rbox((L, Wd, tt), (0, 0, H - tt / 2), p=_u(rng, 0.05, 0.2)), top_c)
    if kind == "trestle":
        for sx in (-1, 1):
            x = sx * L * _u(rng, 0.32, 0.4)
            P.add(_box((0.05, Wd * 0.7, 0.05), (x, 0, 0.025)), frame)
            P.add(_box((0.05, Wd * 0.6, 0.05), (x, 0, H - tt - 0.025)), frame)
            P.add(_box((0.04, _u(rng, 0.08, 0.16), H - tt - 0.1), (x, 0, (H - tt) / 2)), frame)
        P.add(_box((2 * L * 0.36, 0.04, 0.06), (0, 0, H * _u(rng, 0.3, 0.5))), frame)
        if _p(rng, 0.6):
            P.add(_box((0.3, 0.02, 0.08), (L * _u(rng, -0.2, 0.2), Wd / 2 - 0.03, H - tt - 0.05)), frame)
        return P.mesh(turn=np.pi)
    style = _pick(rng, ["round", "square"])
    lr, taper = _u(rng, 0.018, 0.035), _u(rng, 0.55, 1.0)
    ins = _u(rng, 0.02, 0.08)
    hl = H - tt
    for sx in (-1, 1):
        for sy in (-1, 1):
            top = np.array([sx * (L / 2 - ins - lr), sy * (Wd / 2 - ins - lr), hl])
            P.add(_leg(top, top * (1, 1, 0), style, lr, taper), frame)
    ah = _u(rng, 0.05, 0.1)
    if _p(rng, 0.6):  # apron
        for sy in (-1, 1):
            P.add(_box((L - 2 * ins - 4 * lr, 0.02, ah), (0, sy * (Wd / 2 - ins - lr), hl - ah / 2)), frame)
        for sx in (-1, 1):
            P.add(_box((0.02, Wd - 2 * ins - 4 * lr, ah), (sx * (L / 2 - ins - lr), 0, hl - ah / 2)), frame)
    if _p(rng, 0.2):  # lower shelf
        P.add(_box((L - 2 * ins, Wd - 2 * ins, 0.02), (0, 0, H * _u(rng, 0.15, 0.25))), top_c)
    if _p(rng, 0.5):  # drawer on one long side
        dw = min(_u(rng, 0.3, 0.5), L * 0.4)
        x = _u(rng, -0.25, 0.25) * L
        y = Wd / 2 - ins - lr + 0.012
        P.add(_box((dw, 0.02, ah * 0.85), (x, y, hl - ah / 2)), c[2] if _p(rng, 0.3) else frame)
        P.add(_ball(0.012, (x, y + 0.015, hl - ah / 2)), c[2])
    return P.mesh(turn=np.pi)


def _drawer_stack(P: _Parts, x0, x1, y_front, z0, z1, n, colour, knob_colour, rng) -> None:
    gap = 0.006
    h = (z1 - z0) / n
    bar = _p(rng, 0.5)
    for k in range(n):
        zc = z0 + h * (k + 0.5)
        P.add(_box((x1 - x0 - 2 * gap, 0.015, h - 2 * gap), ((x0 + x1) / 2, y_front + 0.0075, zc)), colour)
        if bar:
            w = (x1 - x0) * 0.35
            P.add(
                _rod(
                    ((x0 + x1) / 2 - w / 2, y_front + 0.03, zc + h * 0.2),
                    ((x0 + x1) / 2 + w / 2, y_front + 0.03, zc + h * 0.2),
                    0.006,
                    8,
                ),
                knob_colour,
            )
        else:
            P.add(_ball(0.013, ((x0 + x1) / 2, y_front + 0.02, zc + h * 0.15)), knob_colour)


def _desk(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    top_c, body = c[0], c[0] if _p(rng, 0.6) else c[1]
    front_c = body if _p(rng, 0.6) else c[2]
    knob = c[2] if _p(rng, 0.5) else c[1]
    L, D, H, tt = _u(rng, 1.0, 1.6), _u(rng, 0.5, 0.75), _u(rng, 0.72, 0.77), _u(rng, 0.025, 0.04)
    P.add(_rbox((L, D, tt), (0, 0, H - tt / 2), p=_u(rng, 0.05, 0.15)), top_c)
    side = 1 if _p(rng, 0.5) else -1
    pw = _u(rng, 0.35, 0.45)
    plinth = _u(rng, 0.0, 0.08)
    hz = H - tt
    sides = [side, -side] if _p(rng, 0.2) else [side]
    for s in sides:
        x0, x1 = (L / 2 - pw - 0.01, L / 2 - 0.01) if s > 0 else (-L / 2 + 0.01, -L / 2 + pw + 0.01)
        P.add(_box((pw, D * 0.95, hz - plinth), ((x0 + x1) / 2, -D * 0.025, plinth + (hz - plinth) / 2)), body)
        if plinth > 0.01:
            P.add(_box((pw * 0.95, D * 0.85, plinth), ((x0 + x1) / 2, -D * 0.05, plinth / 2)), c[2] if _p(rng, 0.3) else body)
        _drawer_stack(P, x0, x1, D * 0.45, plinth + 0.01, hz - 0.01, int(rng.integers(2, 5)), front_c, knob, rng)
    if len(sides) == 1:
        xo = -side * (L / 2 - 0.04)
        if _p(rng, 0.5):  # side panel
            P.add(_box((0.03, D * 0.9, hz), (xo, 0, hz / 2)), body)
        else:
            lr = _u(rng, 0.018, 0.03)
            style = _pick(rng, ["round", "square"])
            for y in (-D / 2 + 0.05, D / 2 - 0.05):
                P.add(_leg((xo, y, hz), (xo, y, 0), style, lr), body)
    if _p(rng, 0.6):  # modesty panel at the back
        ph = hz * _u(rng, 0.35, 0.6)
        P.add(_box((L - pw - 0.1, 0.02, ph), (-side * pw / 2, -D / 2 + 0.04, hz - ph / 2)), body)
    if _p(rng, 0.4):  # centre drawer
        cx = -side * pw / 2
        P.add(_box((0.45, 0.015, 0.06), (cx, D / 2 - 0.02, hz - 0.04)), front_c)
        P.add(_ball(0.012, (cx, D / 2, hz - 0.04)), knob)
    if _p(rng, 0.3):  # hutch
        hh, hd = _u(rng, 0.25, 0.4), D * _u(rng, 0.25, 0.4)
        for sx in (-1, 1):
            P.add(_box((0.02, hd, hh), (sx * (L / 2 - 0.02), -D / 2 + hd / 2, H + hh / 2)), body)
        P.add(_box((L - 0.02, hd, 0.02), (0, -D / 2 + hd / 2, H + hh - 0.01)), top_c)
        P.add(_box((L - 0.04, 0.01, hh), (0, -D / 2 + 0.005, H + hh / 2)), body)
    return P.mesh(turn=np.pi)


def _bench(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    seat_c, frame = c[0], c[0] if _p(rng, 0.4) else c[1]
    L, D, H, ts = _u(rng, 1.0, 1.9), _u(rng, 0.3, 0.45), _u(rng, 0.4, 0.48), _u(rng, 0.03, 0.06)
    if _p(rng, 0.5):  # slatted seat
        n = int(rng.integers(3, 6))
        sw = D / n
        for k in range(n):
            P.add(_rbox((L, sw * 0.85, ts), (0, -D / 2 + sw * (k + 0.5), H - ts / 2), p=0.2), seat_c)
    else:
        P.add(_rbox((L, D, ts), (0, 0, H - ts / 2), p=_u(rng, 0.05, 0.3)), seat_c)
    legs = _pick(rng, ["panel", "four", "six"] if L > 1.4 else ["panel", "four"])
    ins = _u(rng, 0.03, 0.15)
    hl = H - ts
    xs = [-(L / 2 - ins), L / 2 - ins] + ([0.0] if legs == "six" else [])
    if legs == "panel":
        pt = _u(rng, 0.03, 0.06)
        for x in xs:
            P.add(_box((pt, D * _u(rng, 0.8, 1.0), hl), (x, 0, hl / 2)), frame)
    else:
        style, lr, splay = _pick(rng, ["round", "square"]), _u(rng, 0.015, 0.03), _u(rng, 0.0, 0.05)
        for x in xs:
            for sy in (-1, 1):
                top = np.array([x, sy * (D / 2 - 0.04), hl])
                bot = np.array([x + np.sign(x) * splay, sy * (D / 2 - 0.04 + splay), 0.0])
                P.add(_leg(top, bot, style, lr), frame)
    if _p(rng, 0.4):  # long stretcher
        P.add(_box((2 * (L / 2 - ins), 0.03, 0.04), (0, 0, hl * _u(rng, 0.25, 0.5))), frame)
    if _p(rng, 0.45):  # backrest at -y
        Hb, tilt = _u(rng, 0.3, 0.45), _u(rng, 0.05, 0.25)
        Rt = _rot("x", tilt)
        pivot = np.array([0.0, -D / 2 + 0.02, H])
        for x in xs:
            P.add(_xf(_box((0.04, 0.04, Hb + ts), (x, 0, (Hb - ts) / 2)), R=Rt, t=pivot), frame)
        n = int(rng.integers(1, 4))
        sh = _u(rng, 0.05, 0.1)
        for k in range(n):
            z = Hb * (1 - k * 0.32) - sh / 2
            P.add(_xf(_box((2 * (L / 2 - ins) + 0.08, 0.025, sh), (0, 0.03, z)), R=Rt, t=pivot), seat_c)
        if _p(rng, 0.5):  # armrests
            for x in (xs[0], xs[1]):
                P.add(_box((0.04, D * 0.85, 0.03), (x, 0.0, H + 0.2)), frame)
                P.add(_box((0.03, 0.03, 0.2), (x, D * 0.35, H + 0.1)), frame)
    return P.mesh(turn=np.pi)


def _shelf(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    body = c[0]
    W, H, D, t = _u(rng, 0.6, 1.2), _u(rng, 0.8, 1.9), _u(rng, 0.25, 0.4), _u(rng, 0.016, 0.03)
    plinth = _u(rng, 0.0, 0.09) if _p(rng, 0.6) else 0.0
    for sx in (-1, 1):
        P.add(_box((t, D, H), (sx * (W / 2 - t / 2), 0, H / 2)), body)
    ov = _u(rng, 0.0, 0.02)
    P.add(_box((W + 2 * ov, D + ov, t), (0, ov / 2, H - t / 2)), body)
    P.add(_box((W - 2 * t, t * 0.4, H - t), (0, -D / 2 + t * 0.2, (H - t) / 2)), body if _p(rng, 0.6) else c[2])
    if plinth > 0.01:
        P.add(_box((W - 2 * t, t, plinth), (0, D / 2 - t * 1.5, plinth / 2)), body)
    nc = int(np.clip(round((H - plinth) / _u(rng, 0.28, 0.42)), 2, 6))
    levels = plinth + t / 2 + (H - t - plinth - t / 2) * np.arange(nc) / nc
    levels[1:] += rng.uniform(-0.03, 0.03, nc - 1)
    for z in levels:
        P.add(_box((W - 2 * t, D - t * 0.4, t), (0, t * 0.2, z)), body)
    bounds = list(levels) + [H - t]
    doors = _p(rng, 0.3)
    book_cols = [c[1], c[2], c[0]]
    for k in range(nc):
        z0, z1 = bounds[k] + t / 2, bounds[k + 1] - t / 2
        hc = z1 - z0
        if k == 0 and doors:
            nd = 2 if W > 0.75 else 1
            dw = (W - 2 * t) / nd
            for i in range(nd):
                x = -W / 2 + t + dw * (i + 0.5)
                P.add(_box((dw - 0.006, 0.018, hc - 0.006), (x, D / 2 + 0.009, (z0 + z1) / 2)), c[1])
                kx = x + (dw * 0.35 if i == 0 else -dw * 0.35) * (1 if nd == 2 else 1)
                P.add(_ball(0.012, (kx, D / 2 + 0.025, (z0 + z1) / 2)), c[2])
            continue
        fill = _u(rng, 0.0, 0.85)
        x = -W / 2 + t + _u(rng, 0.0, 0.3) * (W - 2 * t) * (1 - fill)
        x_end = x + fill * (W - 2 * t)
        while x < x_end:
            bw = _u(rng, 0.015, 0.045)
            bh = min(hc * _u(rng, 0.55, 0.92), 0.35)
            bd = D * _u(rng, 0.6, 0.85)
            col = book_cols[int(rng.integers(0, 3))] + rng.uniform(-6, 6, 3)
            P.add(_box((bw, bd, bh), (x + bw / 2, D / 2 - t - bd / 2 - 0.01, z0 + bh / 2)), col)
            x += bw + 0.002
        if fill > 0.2 and x < W / 2 - t - 0.1 and _p(rng, 0.5):  # a leaning or lying book
            bh = min(hc * 0.7, 0.3)
            book = _box((0.03, D * 0.7, bh), (0, 0, bh / 2))
            lean = _u(rng, 0.25, 0.5)
            P.add(_xf(book, R=_rot("y", lean), t=(x + 0.02, D / 2 - t - D * 0.35 - 0.01, z0)), book_cols[int(rng.integers(0, 3))])
    return P.mesh(turn=np.pi)


def _sofa(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    body, cush = c[0], c[0] if _p(rng, 0.6) else c[1]
    W, D, Hs = _u(rng, 1.4, 2.4), _u(rng, 0.8, 1.0), _u(rng, 0.4, 0.48)
    lh, ct = _u(rng, 0.04, 0.14), _u(rng, 0.1, 0.18)
    arms = int(rng.choice(3, p=[0.1, 0.1, 0.8]))
    aw = _u(rng, 0.1, 0.25)
    ah = Hs + _u(rng, 0.1, 0.25)
    ap = _u(rng, 0.1, 0.5)
    bt, Hback = _u(rng, 0.15, 0.25), Hs + _u(rng, 0.35, 0.5)
    chaise = _p(rng, 0.25)
    cside = 1 if _p(rng, 0.5) else -1
    arm_sides = [] if arms == 0 else ([-1, 1] if arms == 2 else [int(_pick(rng, [-1, 1]))])
    if chaise:
        arm_sides = [s for s in arm_sides if s != cside]
    xin0 = -W / 2 + (aw if -1 in arm_sides else 0.0)
    xin1 = W / 2 - (aw if 1 in arm_sides else 0.0)
    P.add(_rbox((W, D, Hs - ct - lh), (0, 0, lh + (Hs - ct - lh) / 2), p=0.15), body)
    P.add(_rbox((W, bt, Hback - lh), (0, -D / 2 + bt / 2, lh + (Hback - lh) / 2), p=_u(rng, 0.15, 0.35)), body)
    for s in arm_sides:
        P.add(_rbox((aw, D, ah - lh), (s * (W / 2 - aw / 2), 0, lh + (ah - lh) / 2), p=ap), body)
    n = int(np.clip(rng.integers(1, 4), 1, max(1, int((xin1 - xin0) / 0.5))))
    cw = (xin1 - xin0) / n
    ext = _u(rng, 0.5, 0.8) if chaise else 0.0
    for k in range(n):
        x = xin0 + cw * (k + 0.5)
        extra = ext if chaise and ((cside > 0 and k == n - 1) or (cside < 0 and k == 0)) else 0.0
        P.add(_rbox((cw * 0.98, D - bt + extra, ct), (x, bt / 2 + extra / 2, Hs - ct / 2), p=0.3), cush)
    if chaise:
        x = xin1 - cw / 2 if cside > 0 else xin0 + cw / 2
        P.add(_rbox((cw, ext, Hs - ct - lh), (x, D / 2 + ext / 2 - 0.02, lh + (Hs - ct - lh) / 2), p=0.15), body)
    nb = n if _p(rng, 0.7) else 1
    bw = (xin1 - xin0) / nb
    bh = Hback - Hs + _u(rng, -0.05, 0.05)
    for k in range(nb):
        x = xin0 + bw * (k + 0.5)
        cushion = _rbox((bw * 0.97, _u(rng, 0.12, 0.2), bh), (0, 0, bh / 2), p=0.35)
        P.add(_xf(cushion, R=_rot("x", _u(rng, 0.1, 0.25)), t=(x, -D / 2 + bt + 0.05, Hs - 0.02)), cush)
    for k in range(int(rng.integers(0, 3))):
        x = xin0 + 0.25 if k == 0 else xin1 - 0.25
        pillow = _rbox((0.38, 0.12, 0.38), (0, 0, 0), p=0.5)
        P.add(_xf(pillow, R=_rot("x", 0.3) @ _rot("y", _u(rng, -0.3, 0.3)), t=(x, -D / 2 + bt + 0.18, Hs + 0.18)), c[2])
    lr = _u(rng, 0.015, 0.03)
    for sx in (-1, 1):
        for sy in (-1, 1):
            p = np.array([sx * (W / 2 - 0.06), sy * (D / 2 - 0.06), lh])
            P.add(_leg(p, p * (1, 1, 0), "round" if _p(rng, 0.5) else "square", lr, 0.7), c[2] if _p(rng, 0.3) else body)
    return P.mesh(turn=np.pi)


def _bed(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    frame, sheet, blanket = c[0], c[1], c[2]
    W, L = _u(rng, 0.9, 1.8), _u(rng, 1.9, 2.1)
    lh, Hf = _u(rng, 0.03, 0.15), _u(rng, 0.2, 0.35)
    tm = _u(rng, 0.15, 0.28)
    P.add(_rbox((W, L, Hf - lh), (0, 0, lh + (Hf - lh) / 2), p=_u(rng, 0.05, 0.2)), frame)
    mt = Hf + tm
    P.add(_rbox((W * 0.97, L * 0.97, tm), (0, 0, Hf + tm / 2), p=_u(rng, 0.15, 0.3)), sheet)
    hh, ht = _u(rng, 0.45, 1.0), _u(rng, 0.04, 0.08)
    style = _pick(rng, ["panel", "round", "slats"])
    yh = -L / 2 - ht / 2
    if style == "panel":
        P.add(_rbox((W + 0.04, ht, Hf + hh - lh), (0, yh, lh + (Hf + hh - lh) / 2), p=_u(rng, 0.05, 0.2)), frame)
    elif style == "round":
        P.add(_box((W + 0.04, ht, Hf + hh * 0.6 - lh), (0, yh, lh + (Hf + hh * 0.6 - lh) / 2)), frame)
        P.add(_rbox((W + 0.04, ht, hh * 0.8), (0, yh, Hf + hh * 0.6), p=0.6), frame)
    else:
        for sx in (-1, 1):
            P.add(_box((0.06, ht, Hf + hh), (sx * (W / 2 - 0.01), yh, (Hf + hh) / 2)), frame)
        P.add(_box((W, ht, 0.07), (0, yh, Hf + hh - 0.035)), frame)
        n = int(rng.integers(3, 9))
        for k in range(n):
            x = -W / 2 + W * (k + 1) / (n + 1)
            P.add(_box((0.035, ht * 0.6, hh), (x, yh, Hf + hh / 2)), frame)
    if _p(rng, 0.35):  # footboard
        fh = hh * _u(rng, 0.3, 0.6)
        P.add(_rbox((W + 0.04, ht, Hf + fh - lh), (0, L / 2 + ht / 2, lh + (Hf + fh - lh) / 2), p=0.15), frame)
    npil = 1 if W < 1.25 else 2
    pw = (W * 0.9) / npil
    for k in range(npil):
        x = -W * 0.45 + pw * (k + 0.5)
        P.add(
            _rbox((pw * 0.92, _u(rng, 0.3, 0.42), _u(rng, 0.1, 0.16)), (x, -L / 2 + 0.25, mt + 0.04), p=0.5),
            sheet if _p(rng, 0.5) else c[2],
        )
    if _p(rng, 0.75):  # blanket draped over the foot end
        bl = L * _u(rng, 0.5, 0.75)
        P.add(_rbox((W * 0.97 + 0.05, bl, tm * 0.8), (0, L * 0.485 - bl / 2 + 0.025, mt - tm * 0.4 + 0.025), p=0.15), blanket)
    if _p(rng, 0.15):  # four-poster
        for sx in (-1, 1):
            for sy in (-1, 1):
                P.add(
                    _rod((sx * W / 2, sy * (L / 2 + ht / 2), 0), (sx * W / 2, sy * (L / 2 + ht / 2), Hf + hh + 0.5), 0.03), frame
                )
    elif lh > 0.02:
        for sx in (-1, 1):
            for sy in (-1, 1):
                p = np.array([sx * (W / 2 - 0.05), sy * (L / 2 - 0.05), lh])
                P.add(_leg(p, p * (1, 1, 0), "round", 0.03, 0.8), frame)
    return P.mesh(turn=np.pi)


def _shade(r1: float, r2: float, ls: float, t: float, pos, direction, sections: int = 32) -> Part:
    """A thin-walled lamp shade: top radius r1 at `pos`, opening (radius r2) along `direction`."""
    prof = [(0, -t), (r1 - t, -t), (r2 - t, -ls), (r2, -ls), (r1, 0), (0, 0)]
    return _xf(_revolve(prof, sections=sections), R=_align((0, 0, -1), direction), t=pos)


def _lamp(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    metal, shade_c = c[0], c[1] if _p(rng, 0.7) else c[0]
    style = _pick(rng, ["arm", "arc", "goose"])
    rbase = _u(rng, 0.06, 0.1) if style != "arc" else _u(rng, 0.14, 0.2)
    hbase = _u(rng, 0.015, 0.035)
    if _p(rng, 0.65):
        P.add(_revolve([(0, 0), (rbase, 0), (rbase * 0.97, hbase * 0.7), (rbase * 0.7, hbase), (0, hbase)], sections=32), metal)
    else:
        P.add(_rbox((2 * rbase, 1.6 * rbase, hbase), (0, 0, hbase / 2), p=0.2), metal)
    tr = _u(rng, 0.007, 0.012)
    if style == "arc":
        Hp = _u(rng, 0.9, 1.3)
        Ra = _u(rng, 0.35, 0.6)
        P.add(_rod((0, 0, hbase), (0, 0, Hp), tr * 1.3, 12), metal)
        phi = np.linspace(0.0, _u(rng, 0.55, 0.8) * np.pi, 24)
        arc = np.column_stack([Ra - Ra * np.cos(phi), np.zeros_like(phi), Hp + Ra * _u(rng, 0.5, 0.9) * np.sin(phi)])
        P.add(_tube(arc, tr, sections=10), metal)
        end, d = arc[-1], np.array([0.0, 0.0, -1.0])
        r1, r2, ls = _u(rng, 0.03, 0.08), _u(rng, 0.14, 0.22), _u(rng, 0.1, 0.2)
    else:
        bx = -rbase * 0.5
        start = np.array([bx, 0.0, hbase])
        a1, L1 = _u(rng, 0.05, 0.5), _u(rng, 0.25, 0.4)
        j1 = start + L1 * np.array([np.sin(a1), 0.0, np.cos(a1)])
        e2, L2 = _u(rng, -0.4, 0.5), _u(rng, 0.2, 0.35)
        j2 = j1 + L2 * np.array([np.cos(e2), 0.0, np.sin(e2)])
        beta = _u(rng, 0.1, 0.9)
        d = np.array([np.sin(beta), 0.0, -np.cos(beta)])
        r1, r2, ls = _u(rng, 0.015, 0.04), _u(rng, 0.05, 0.09), _u(rng, 0.07, 0.14)
        if style == "arm":
            twin = _p(rng, 0.4)
            for off in (-0.012, 0.012) if twin else (0.0,):
                P.add(_rod(start + (0, off, 0), j1 + (0, off, 0), tr * (0.7 if twin else 1.0), 10), metal)
                P.add(_rod(j1 + (0, off, 0), j2 + (0, off, 0), tr * (0.7 if twin else 1.0), 10), metal)
            P.add(_ball(tr * 2.0, j1), c[2] if _p(rng, 0.5) else metal)
            P.add(_ball(tr * 1.8, j2), metal)
            end = j2 + d * 0.01
        else:
            path = _bezier([start, start + (0, 0, L1 * 0.8), j1 + (L2 * 0.2, 0, L2 * 0.3), j2], 24)
            P.add(_tube(path, tr, sections=10), metal)
            end = j2
            d = path[-1] - path[-2]
            d = d / np.linalg.norm(d)
            d = 0.5 * d + 0.5 * np.array([np.sin(beta), 0, -np.cos(beta)])
            d /= np.linalg.norm(d)
    P.add(_shade(r1, r2, ls, 0.004, end, d), shade_c)
    P.add(_ball(min(r1, r2 * 0.5) * 0.9, end + d * ls * 0.45), c[2])
    return P.mesh()


# --------------------------------------------------------------------------------------
# Vehicles: car, airplane
# --------------------------------------------------------------------------------------


def _car(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    body, glass, trim = c[0], c[1], c[2]
    kind = _pick(rng, ["sedan", "hatch", "suv", "van", "pickup"])
    L, Wc = _u(rng, 3.8, 4.9), _u(rng, 1.65, 1.9)
    r = _u(rng, 0.3, 0.36) if kind in ("sedan", "hatch") else _u(rng, 0.34, 0.4)
    tw = _u(rng, 0.18, 0.25)
    clear = r * _u(rng, 0.45, 0.65)
    hb = _u(rng, 0.45, 0.65)
    zb = clear + hb
    P.add(_rbox((L, Wc, hb), (0, 0, clear + hb / 2), p=_u(rng, 0.2, 0.35)), body)
    hc = _u(rng, 0.35, 0.55) if kind not in ("suv", "van") else _u(rng, 0.55, 0.8)
    # cabin: bottom x-range, top x-range (fractions of L from the front at +x)
    if kind == "sedan":
        b0, b1, t0, t1 = 0.22, -0.28, 0.05, -0.15
    elif kind == "hatch":
        b0, b1, t0, t1 = 0.2, -0.5, 0.05, -0.46
    elif kind == "suv":
        b0, b1, t0, t1 = 0.22, -0.5, 0.12, -0.48
    elif kind == "van":
        b0, b1, t0, t1 = 0.42, -0.5, 0.3, -0.49
    else:  # pickup
        b0, b1, t0, t1 = 0.2, -0.08, 0.1, -0.06
    j = rng.uniform(-0.04, 0.04, 4)
    b0, b1, t0, t1 = (b0 + j[0]) * L, (b1 + abs(j[1]) if b1 <= -0.49 else b1 + j[1]) * L, (t0 + j[2]) * L, (t1 + j[3]) * L
    b1 = max(b1, -0.5 * L)
    t1 = max(t1, -0.49 * L)
    wb, wt = Wc * 0.92, Wc * _u(rng, 0.75, 0.85)
    C = np.empty((2, 2, 2, 3))
    for ix, (xb, xt) in enumerate(((b1, t1), (b0, t0))):
        for iy, sy in enumerate((-1, 1)):
            C[ix, iy, 0] = (xb, sy * wb / 2, zb - 0.08)
            C[ix, iy, 1] = (xt, sy * wt / 2, zb + hc)
    P.add(_hexa(C, p=0.35), glass)
    if _p(rng, 0.7):  # roof panel in the body colour
        P.add(_rbox((abs(t0 - t1) * 0.9, wt * 0.92, 0.06), ((t0 + t1) / 2, 0, zb + hc - 0.02), p=0.3), body)
    if kind == "pickup":  # open bed walls
        x0, x1 = -L / 2 + 0.05, b1 - 0.05
        for sy in (-1, 1):
            P.add(_box((x1 - x0, 0.06, 0.3), ((x0 + x1) / 2, sy * (Wc / 2 - 0.05), zb + 0.1)), body)
        P.add(_box((0.06, Wc - 0.1, 0.3), (x0, 0, zb + 0.1)), body)
    ax = L / 2 - r * _u(rng, 1.6, 2.2)
    ax_r = L / 2 - r * _u(rng, 1.7, 2.5)
    hub_r = r * _u(rng, 0.4, 0.7)
    for x in (ax, -ax_r):
        for sy in (-1, 1):
            y = sy * (Wc / 2 - tw / 2 + 0.03)
            P.add(_rod((x, y - tw / 2, r), (x, y + tw / 2, r), r, 16), trim)
            P.add(_rod((x, y + sy * tw / 2, r), (x, y + sy * (tw / 2 + 0.015), r), hub_r, 12), glass)
    for sy in (-1, 1):  # headlights (front, +x) and tail lights
        P.add(_rbox((0.06, 0.28, 0.12), (L / 2 - 0.02, sy * Wc * 0.33, zb - 0.15), p=0.4), glass)
        P.add(_rbox((0.06, 0.25, 0.1), (-L / 2 + 0.02, sy * Wc * 0.35, zb - 0.12), p=0.4), trim)
    if _p(rng, 0.5):  # front grille / bumper strip
        P.add(_box((0.06, Wc * 0.9, 0.1), (L / 2, 0, clear + 0.1)), trim)
    return P.mesh()


def _airplane(rng: np.random.Generator) -> trimesh.Trimesh:
    P, c = _Parts(), _colours(rng)
    fus, wing_c, acc = c[0], c[0] if _p(rng, 0.5) else c[1], c[2]
    rf = _u(rng, 0.04, 0.07)
    ln, lt = _u(rng, 0.08, 0.2), _u(rng, 0.2, 0.32)
    s = np.linspace(0.0, 1.0, 7)[1:]
    prof = [(0.0, 0.0)]
    prof += [(rf * np.sqrt(1 - (1 - q) ** 2), ln * q) for q in s]  # rounded nose
    prof += [(rf, ln + (1 - ln - lt) * q) for q in (0.5, 1.0)]
    tail_r = rf * _u(rng, 0.15, 0.35)
    prof += [(rf - (rf - tail_r) * q**1.5, 1 - lt + lt * q) for q in s]
    prof += [(0.0, 1.0)]
    V, F = _revolve(prof, sections=24)
    # z -> x (nose at x=0 pointing to -x after flip below), then lift the tail
    V = V @ _rot("y", np.pi / 2).T  # (x, y, z) -> (z, y, -x)
    up = rf * _u(rng, 0.3, 0.8)
    w = np.clip((V[:, 0] - (1 - lt)) / lt, 0.0, 1.0) ** 2
    V[:, 2] += up * w
    P.add((V, F), fus)
    xw, cr = _u(rng, 0.33, 0.48), _u(rng, 0.14, 0.24)
    lam, b = _u(rng, 0.25, 0.6), _u(rng, 0.4, 0.6)
    sweep, dihed = _u(rng, 0.0, 0.6), _u(rng, -0.02, 0.1)
    zw = rf * _pick(rng, [-0.6, 0.0, 0.65])

    def wing(x_root, chord, span, taper, sw, dh, z, thick, side):
        ct = chord * taper
        C = np.empty((2, 2, 2, 3))
        tip_x = x_root + span * np.tan(sw)
        for iy, (xl, ch, y, zz) in enumerate(((x_root, chord, 0.0, z), (tip_x, ct, side * span, z + span * dh))):
            for ix, xx in enumerate((xl, xl + ch)):
                for iz, dz in enumerate((-0.5, 0.5)):
                    C[ix, iy, iz] = (xx, y, zz + dz * thick * ch)
        return _hexa(C)

    for side in (-1, 1):
        P.add(wing(xw, cr, b, lam, sweep, dihed, zw, 0.1, side), wing_c)
    # tail
    tail_x = 1 - lt * 0.55
    sc, sb = _u(rng, 0.07, 0.12), _u(rng, 0.12, 0.2)
    fh, fc = _u(rng, 0.1, 0.18), _u(rng, 0.1, 0.16)
    fin_sweep = _u(rng, 0.3, 0.8)
    C = np.empty((2, 2, 2, 3))
    zt = up + rf * 0.3
    for iz, (xl, ch, zz) in enumerate(((tail_x, fc, zt), (tail_x + fh * np.tan(fin_sweep), fc * 0.6, zt + fh))):
        for ix, xx in enumerate((xl, xl + ch)):
            for iy, dy in enumerate((-0.5, 0.5)):
                C[ix, iy, iz] = (xx, dy * 0.012, zz)
    P.add(_hexa(C), wing_c)
    ttail = _p(rng, 0.2)
    for side in (-1, 1):
        if ttail:
            P.add(wing(tail_x + fh * np.tan(fin_sweep), sc * 0.9, sb, 0.6, sweep * 0.6, 0.0, zt + fh, 0.08, side), wing_c)
        else:
            P.add(wing(tail_x + 0.02, sc, sb, 0.6, sweep * 0.8, dihed, up * 0.8, 0.08, side), wing_c)
    engines = int(_pick(rng, [0, 2, 4]))
    if engines == 0:  # propeller at the nose
        P.add(_rod((-0.02, 0, 0), (0.01, 0, 0), rf * 0.4, 12), acc)
        nb = int(rng.integers(2, 5))
        for k in range(nb):
            a = _TAU * k / nb
            d = np.array([0.0, np.cos(a), np.sin(a)])
            P.add(_slab((-0.015, 0, 0), d * rf * _u(rng, 2.0, 3.0) + (-0.015, 0, 0), 0.02, 0.005, up=(1, 0, 0)), acc)
    else:
        nr, nl = rf * _u(rng, 0.35, 0.55), _u(rng, 0.1, 0.16)
        spans = [0.35] if engines == 2 else [0.3, 0.6]
        for q in spans:
            for side in (-1, 1):
                y = side * q * b
                xle = xw + q * b * np.tan(sweep)
                zc = zw + q * b * dihed - nr * 1.4
                prof = [(0, 0), (nr * 0.8, 0), (nr, nl * 0.2), (nr * 0.9, nl), (0, nl)]
                eng = _xf(_revolve(prof, sections=16), R=_rot("y", np.pi / 2), t=(xle - nl * 0.45, y, zc))
                P.add(eng, acc)
    # nose points to -x: flip so the nose is at +x (looks more natural in view 0)
    Vall, Fall, Call = P.arrays()
    Vall = Vall * np.array([-1.0, 1.0, 1.0])
    Q = _Parts()
    Q.add((Vall, Fall[:, ::-1]), Call)
    return Q.mesh()


# --------------------------------------------------------------------------------------
# Registry and entry point
# --------------------------------------------------------------------------------------

SHAPE_FAMILIES: dict[str, Callable[[np.random.Generator], trimesh.Trimesh]] = {
    "mug": _mug,
    "cup": _cup,
    "bowl": _bowl,
    "teapot": _teapot,
    "bottle": _bottle,
    "vase": _vase,
    "chair": _chair,
    "stool": _stool,
    "table": _table,
    "desk": _desk,
    "bench": _bench,
    "shelf": _shelf,
    "sofa": _sofa,
    "bed": _bed,
    "lamp": _lamp,
    "car": _car,
    "airplane": _airplane,
}


def category_names() -> list[str]:
    """The built-in categories, in registry order."""
    return list(SHAPE_FAMILIES)


def _subdivide(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """1-to-4 midpoint subdivision keeping per-face colours (only used for very small meshes)."""
    V, F = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
    n = len(F)
    NV = np.concatenate([a, b, c, ab, bc, ca])  # blocks of n
    i = np.arange(n)
    A, B, C, AB, BC, CA = (i + k * n for k in range(6))
    NF = np.concatenate([np.stack([A, AB, CA], 1), np.stack([AB, B, BC], 1), np.stack([CA, BC, C], 1), np.stack([AB, BC, CA], 1)])
    colours = np.tile(np.asarray(mesh.visual.face_colors), (4, 1))
    return trimesh.Trimesh(vertices=NV, faces=NF, face_colors=colours, process=False)


def _seed_sequence(category: str, seed: int) -> np.random.SeedSequence:
    s = int(seed) & ((1 << 64) - 1)
    return np.random.SeedSequence([zlib.crc32(category.encode("utf-8")), s & 0xFFFFFFFF, s >> 32])


def make_object(category: str, seed: int, family_colours: bool = False) -> trimesh.Trimesh:
    """One instance of `category`, drawn deterministically from `seed`; with `family_colours` every instance of the
    category wears the same colour scheme (small per-instance jitter only).

    Same (category, seed) -> identical vertices, faces and face colours on any machine.
    The object stands on z = 0, centred on the z axis; z is up.
    Raises KeyError (naming the known categories) for an unknown category.
    """
    try:
        family = SHAPE_FAMILIES[category]
    except (KeyError, TypeError):
        raise KeyError(f"unknown shape category {category!r}; known categories: {', '.join(SHAPE_FAMILIES)}") from None
    rng = np.random.default_rng(_seed_sequence(category, seed))
    scheme = np.random.default_rng(zlib.crc32(category.encode("utf-8"))) if family_colours else None
    token = _FAMILY_COLOURS.set(scheme)
    try:
        mesh = family(rng)
    finally:
        _FAMILY_COLOURS.reset(token)
    while len(mesh.faces) < MIN_FACES:
        mesh = _subdivide(mesh)
    V = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = V.min(axis=0), V.max(axis=0)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    mesh.vertices = V + shift
    return mesh
