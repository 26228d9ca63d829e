"""Atomic structures for the training sets (ASE): nanoflakes of 2D materials.

Three families, as in Larsen et al. (Sec. 2):

- ``mos2``: unsupported MoS2 nanoflakes (2H), cut from an :func:`ase.build.mx2` layer to a
  random convex or hexagon-like shape of random size and in-plane orientation.
- ``mos2-graphene``: an MoS2 flake 3.3-7.0 A from graphene; the lattices are rotated by 0, 15
  or 30 deg or at random relative to each other (a quarter each). The support
  (``StructureConfig.support``, shares :data:`SUPPORT_SHARES`) is a graphene flake larger than
  the MoS2 flake (25%), or a continuous film covering the whole field, as on a grid: a
  monolayer (45%), an AB bilayer (20%) or ABA graphite (10%). A film is cut at the cell edges
  (a seam where the rotated lattice meets its periodic image); its defects are those of every
  structure (5% vacancies, 5% holes).
- ``2d``: flakes of any 2D material of an ASE database (<= 8 atoms per cell), split into a
  training and a validation part 2:1 by element set (:func:`split_by_element_set`). The
  default is a built-in set of common 2D prototypes (:func:`prototype_materials`;
  :func:`write_prototype_database` writes it as an ASE ``.db``).

Every structure then gets defects and disorder, in this order: 5% of the atoms removed as
vacancies, 5% as holes (the whole atomic column of a chosen atom), a Gaussian jitter of 0.01 A
on every coordinate, and a tilt of up to 10 deg about a random in-plane axis.

Geometry
--------
The cell is ``extent x extent`` in ``x, y`` (``extent = size * sampling``, the field of view of
the network's grid) and periodic; the flake sits in its centre with at least ``margin`` A of
vacuum to the cell edges. The beam travels along ``+z``: the first atom is ``top_margin`` A below
the top of the cell, and the cell ends ``exit_distance`` A below the lowest (largest ``z``) atom,
which is where the exit wave is taken. Everything is drawn from the ``numpy`` Generator passed
in, so a seed gives the same structure on every machine.

The projected atomic columns (``x, y`` in A in the frame of the exit wave, and a label such as
``"Mo"``, ``"S2"`` or ``"S"``) are returned with each structure for evaluation: a column is a set
of atoms that share ``(x, y)`` before the tilt, located at the mean projected position of its
remaining atoms after the tilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections import Counter
from typing import Any, Sequence

import numpy as np
from ase import Atoms

__all__ = [
    "DATASETS",
    "StructureConfig",
    "Structure",
    "make_structure",
    "layer_flake",
    "mos2_layer",
    "graphene_layer",
    "mos2_flake",
    "mos2_on_graphene",
    "material_flake",
    "add_defects",
    "tilt",
    "prototype_materials",
    "write_prototype_database",
    "load_materials",
    "split_by_element_set",
    "default_database_path",
]

DATASETS = ("mos2", "mos2-graphene", "2d")
"""Names of the structure families (``StructureConfig.dataset``)."""

_COLUMN_TOLERANCE = 0.2  # A: atoms closer than this in (x, y) share a column

SUPPORT_LAYERS = {"flake": 1, "film": 1, "bilayer": 2, "graphite": 3}
"""Supports of the ``mos2-graphene`` family: a graphene flake larger than the MoS2 flake, or a
continuous film covering the whole field (the usual grid) of 1, 2 (AB) or 3 (ABA) layers."""
SUPPORT_SHARES = {"flake": 0.25, "film": 0.45, "bilayer": 0.2, "graphite": 0.1}
GRAPHITE_SPACING = 3.35  # A between graphene layers (AB stacking)


@dataclasses.dataclass
class StructureConfig:
    """How the structures of a data set are made (lengths in A, angles in degrees).

    ``size`` and ``sampling`` fix the field of view (``size * sampling`` A square), which is
    the cell of the simulation and the frame of the exit wave. ``flake_fraction`` is the
    range of the flake diameter relative to the largest one that fits (field of view minus
    ``2 * margin``). ``database``/``split`` are used by the ``2d`` family only (``None``:
    the built-in prototype database).
    """

    dataset: str = "mos2"
    size: int = 256
    sampling: float = 0.105
    margin: float = 2.0
    flake_fraction: tuple[float, float] = (0.6, 1.0)
    vacancy_fraction: float = 0.05
    hole_fraction: float = 0.05
    jitter: float = 0.01
    max_tilt: float = 10.0
    graphene_distance: tuple[float, float] = (3.3, 7.0)
    support: dict[str, float] = dataclasses.field(default_factory=lambda: dict(SUPPORT_SHARES))
    top_margin: float = 1.0
    exit_distance: float = 2.0
    database: str | None = None
    split: str = "train"
    split_seed: int = 0
    max_atoms_per_cell: int = 8

    def __post_init__(self):
        self.flake_fraction = tuple(self.flake_fraction)
        self.graphene_distance = tuple(self.graphene_distance)
        self.support = {str(k): float(v) for k, v in dict(self.support).items()}
        self.validate()

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if int(self.size) != self.size or self.size < 8:
            raise ValueError(f"size must be an integer number of pixels >= 8, got {self.size}")
        if not self.sampling > 0:
            raise ValueError(f"sampling must be positive (A/px), got {self.sampling}")
        if self.extent - 2 * self.margin < 4.0:
            raise ValueError(
                f"the field of view ({self.extent:.2f} A = {self.size} px x {self.sampling} A) "
                f"leaves no room for a flake inside a {self.margin} A margin; use a larger --size")
        lo, hi = self.flake_fraction
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"flake_fraction must satisfy 0 < lo <= hi <= 1, got {self.flake_fraction}")
        for name in ("vacancy_fraction", "hole_fraction"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.jitter < 0 or not 0 <= self.max_tilt <= 45:
            raise ValueError("jitter must be >= 0 and max_tilt in [0, 45] deg")
        dlo, dhi = self.graphene_distance
        if not 0 < dlo <= dhi:
            raise ValueError(f"graphene_distance must satisfy 0 < lo <= hi, got {self.graphene_distance}")
        unknown = set(self.support) - set(SUPPORT_LAYERS)
        if unknown or not self.support or any(v < 0 for v in self.support.values()) \
                or sum(self.support.values()) <= 0:
            raise ValueError(f"support must map some of {', '.join(SUPPORT_LAYERS)} to shares "
                             f">= 0 (not all 0), got {self.support}")
        if self.split not in ("train", "validation", "all"):
            raise ValueError(f"split must be 'train', 'validation' or 'all', got {self.split!r}")
        if self.exit_distance < 0 or self.top_margin < 0:
            raise ValueError("exit_distance and top_margin must be >= 0")

    @property
    def extent(self) -> float:
        """Side of the (square) field of view in A."""
        return self.size * self.sampling

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["flake_fraction"] = list(self.flake_fraction)
        d["graphene_distance"] = list(self.graphene_distance)
        d["support"] = dict(self.support)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StructureConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown structure options: {sorted(unknown)}")
        return cls(**d)


@dataclasses.dataclass
class Structure:
    """A structure ready for multislice, with its projected atomic columns.

    ``columns_xy`` is ``(n, 2)`` float (x, y in A; x along the second array axis of the exit
    wave, y along the first), ``columns_label`` the column composition (``"Mo"``, ``"S2"``).
    ``info`` says what was made (material, rotation, distance, tilt...).
    """

    atoms: Atoms
    columns_xy: np.ndarray
    columns_label: list[str]
    info: dict[str, Any]

    def columns_records(self) -> list[list]:
        """Columns as JSON-friendly ``[x, y, label]`` rows."""
        return [[round(float(x), 5), round(float(y), 5), lab]
                for (x, y), lab in zip(self.columns_xy, self.columns_label)]


# --------------------------------------------------------------------------------------------
# layers and flakes


def mos2_layer(a: float = 3.16, thickness: float = 3.17, kind: str = "2H") -> Atoms:
    """A primitive cell of an MoS2 monolayer (z centred on the metal plane)."""
    from ase.build import mx2

    return mx2("MoS2", kind=kind, a=a, thickness=thickness, size=(1, 1, 1), vacuum=None)


def graphene_layer(a: float = 2.46, formula: str = "C2") -> Atoms:
    """A primitive cell of graphene (or hBN with ``formula="BN"``, ``a=2.50``)."""
    from ase.build import graphene

    return graphene(formula=formula, a=a, size=(1, 1, 1), vacuum=None)


def _column_ids(xy: np.ndarray, tol: float = _COLUMN_TOLERANCE) -> np.ndarray:
    """Label atoms sharing (x, y) within ``tol`` A with one column id."""
    from scipy.spatial import cKDTree

    if len(xy) <= 1:
        return np.zeros(len(xy), dtype=int)

    tree = cKDTree(xy)
    pairs = tree.query_pairs(tol, output_type="ndarray")
    parent = np.arange(len(xy))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(len(xy))])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def _random_shape(rng: np.random.Generator, radius: float, lattice_angle: float,
                  sixfold: bool) -> np.ndarray:
    """Half-planes ``(n, 3)`` (nx, ny, d): a point p is inside if ``n . p <= d`` for all.

    Half the shapes are hexagon-like (six edges along the lattice, each at a random distance,
    giving hexagons, truncated triangles and triangles as MoS2 flakes show); the others are
    random convex polygons with 5-9 vertices on a circle of the given radius.
    """
    if sixfold and rng.random() < 0.5:
        angles = lattice_angle + np.deg2rad(30.0) + np.arange(6) * np.pi / 3
        d = radius * rng.uniform(0.55, 1.0, size=6)
        return np.stack([np.cos(angles), np.sin(angles), d], axis=1)
    n = int(rng.integers(5, 10))
    # keep gaps below ~pi/2 so the polygon contains the centre and stays blob-like
    theta = np.sort(np.mod(np.linspace(0, 2 * np.pi, n, endpoint=False)
                           + rng.uniform(-0.35, 0.35, size=n) * 2 * np.pi / n
                           + rng.uniform(0, 2 * np.pi), 2 * np.pi))
    r = radius * rng.uniform(0.75, 1.0, size=n)
    pts = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    planes = []
    for i in range(n):
        p, q = pts[i], pts[(i + 1) % n]
        edge = q - p
        normal = np.array([edge[1], -edge[0]])
        normal /= np.linalg.norm(normal)
        if normal @ p < 0:  # point outwards
            normal = -normal
        planes.append([normal[0], normal[1], normal @ p])
    return np.array(planes)


def layer_flake(unit_cell: Atoms, rng: np.random.Generator, radius: float,
                rotation: float | None = None, sixfold: bool | None = None,
                round_shape: bool = False) -> tuple[Atoms, dict]:
    """Cut a flake of a 2D layer, centred on (0, 0) in ``x, y`` and on ``z = 0``.

    Parameters
    ----------
    unit_cell : ase.Atoms
        A cell of the layer with the first two cell vectors in the ``xy`` plane.
    rng : numpy Generator
    radius : float
        Radius (A) of the circle the flake fits in.
    rotation : float, optional
        In-plane rotation of the lattice in radians (random if omitted).
    sixfold : bool, optional
        Allow lattice-aligned hexagon-like shapes (default: the lattice is hexagonal).
    round_shape : bool
        Cut a plain disk of ``radius`` (a film larger than the field of view).

    Returns
    -------
    flake, info
    """
    cell = np.asarray(unit_cell.cell)
    a1, a2 = cell[0, :2], cell[1, :2]
    area = abs(a1[0] * a2[1] - a1[1] * a2[0])
    if area < 1e-6 or np.linalg.norm(cell[0, 2]) > 1e-6 or np.linalg.norm(cell[1, 2]) > 1e-6:
        raise ValueError("the first two cell vectors of a layer must span the xy plane")
    if sixfold is None:
        l1, l2 = np.linalg.norm(a1), np.linalg.norm(a2)
        cosang = abs(a1 @ a2) / (l1 * l2)
        sixfold = abs(l1 - l2) < 1e-3 * l1 and abs(cosang - 0.5) < 1e-3
    # repeat enough cells to cover a disk of 1.5 radius around the supercell centre
    h1 = area / np.linalg.norm(a2)  # distance between lattice lines along a1
    h2 = area / np.linalg.norm(a1)
    n1 = int(math.ceil(3 * radius / h1)) + 2
    n2 = int(math.ceil(3 * radius / h2)) + 2
    layer = unit_cell.repeat((n1, n2, 1))
    pos = layer.get_positions()
    z = pos[:, 2] - np.mean(unit_cell.positions[:, 2])
    center = 0.5 * (n1 * a1 + n2 * a2) + (rng.random(2) - 0.5) * (a1 + a2)  # random offset
    xy = pos[:, :2] - center
    if rotation is None:
        rotation = float(rng.uniform(0, 2 * np.pi))
    c, s = math.cos(rotation), math.sin(rotation)
    xy = xy @ np.array([[c, s], [-s, c]])
    lattice_angle = math.atan2(a1[1], a1[0]) + rotation
    planes = np.zeros((0, 3)) if round_shape else _random_shape(rng, radius, lattice_angle,
                                                                 sixfold)
    inside = np.all(xy @ planes[:, :2].T <= planes[:, 2] + 1e-9, axis=1)
    inside &= np.hypot(xy[:, 0], xy[:, 1]) <= radius + 1e-9
    flake = Atoms(numbers=layer.numbers[inside],
                  positions=np.column_stack([xy[inside], z[inside]]))
    info = {"rotation_deg": math.degrees(rotation) % 360, "radius": float(radius),
            "shape_edges": int(len(planes))}
    return flake, info


def _flake_radius(config: StructureConfig, rng: np.random.Generator, tilt_room: float = 0.0) -> float:
    r_max = 0.5 * (config.extent - 2 * config.margin) - tilt_room
    if r_max < 2.0:
        raise ValueError(f"field of view {config.extent:.1f} A too small for a flake; use a larger --size")
    return float(r_max * rng.uniform(*config.flake_fraction))


def _tilt_room(thickness: float, max_tilt_deg: float) -> float:
    return thickness * math.sin(math.radians(max_tilt_deg))


def mos2_flake(rng: np.random.Generator, radius: float) -> tuple[Atoms, dict]:
    """An unsupported 2H-MoS2 nanoflake of (circumscribed) radius ``radius`` A, centred at 0."""
    flake, info = layer_flake(mos2_layer(), rng, radius, sixfold=True)
    info["material"] = "MoS2"
    return flake, info


def graphene_stack(n_layers: int = 1, a: float = 2.46,
                   spacing: float = GRAPHITE_SPACING) -> Atoms:
    """A cell of ``n_layers`` AB-stacked graphene layers (Bernal graphite for 3: ABA).

    Layer ``k`` is shifted in plane by ``k mod 2`` C-C bonds and lies ``k * spacing`` A
    further along +z (the beam direction, so further from the MoS2 above it).
    """
    base = graphene_layer(a)
    bond = base.positions[1, :2] - base.positions[0, :2]
    layers = []
    for k in range(int(n_layers)):
        layer = base.copy()
        layer.positions[:, :2] += (k % 2) * bond
        layer.positions[:, 2] += k * spacing
        layers.append(layer)
    stack = layers[0]
    for layer in layers[1:]:
        stack += layer
    stack.cell = base.cell
    return stack


def mos2_on_graphene(rng: np.random.Generator, radius_mos2: float, radius_graphene: float,
                     distance: tuple[float, float] = (3.3, 7.0), support: str = "flake",
                     film_radius: float | None = None) -> tuple[Atoms, dict]:
    """An MoS2 flake on graphene, centred at 0.

    ``support``: ``"flake"``, a graphene flake of radius ``radius_graphene``; ``"film"``,
    ``"bilayer"``, ``"graphite"``: a continuous 1, 2 (AB) or 3 (ABA) layer film cut to a disk of
    ``film_radius`` A (larger than the field of view; :func:`make_structure` crops it to the
    cell). The graphene plane is ``d`` in ``distance`` A below the lower S plane; the MoS2
    lattice is rotated relative to the graphene by 0, 15 or 30 deg or a random angle, a
    quarter each.
    """
    if support not in SUPPORT_LAYERS:
        raise ValueError(f"support must be one of {', '.join(SUPPORT_LAYERS)}, got {support!r}")
    rot_g = float(rng.uniform(0, 2 * np.pi))
    choice = int(rng.integers(4))
    rel = [0.0, 15.0, 30.0, float(rng.uniform(0, 60.0))][choice]
    if support == "flake":
        graphene, _ = layer_flake(graphene_layer(), rng, radius_graphene, rotation=rot_g,
                                  sixfold=True)
    else:
        radius = float(film_radius if film_radius is not None else 2 * radius_graphene)
        graphene, _ = layer_flake(graphene_stack(SUPPORT_LAYERS[support]), rng, radius,
                                  rotation=rot_g, sixfold=True, round_shape=True)
    mos2, info = layer_flake(mos2_layer(), rng, radius_mos2,
                             rotation=rot_g + math.radians(rel), sixfold=True)
    d = float(rng.uniform(*distance))
    # beam along +z: graphene below the MoS2 (larger z), d from the lower S plane
    s_low = mos2.positions[:, 2].max() if len(mos2) else 0.0
    graphene.positions[:, 2] += s_low + d - graphene.positions[:, 2].min()
    shift = rng.normal(0, 0.5, size=2)  # MoS2 not exactly on the graphene centre
    mos2.positions[:, :2] += shift
    combined = mos2 + graphene
    info.update({"material": "MoS2/graphene", "relative_rotation_deg": rel,
                 "rotation_class": ["0", "15", "30", "random"][choice], "distance": d,
                 "support": support, "support_layers": SUPPORT_LAYERS[support],
                 "graphene_radius": float(radius_graphene if support == "flake" else radius)})
    return combined, info


def material_flake(unit_cell: Atoms, rng: np.random.Generator, radius: float) -> tuple[Atoms, dict]:
    """A flake of any 2D material given by its cell (first two vectors in plane)."""
    flake, info = layer_flake(unit_cell, rng, radius)
    info["material"] = unit_cell.get_chemical_formula(mode="hill")
    return flake, info


# --------------------------------------------------------------------------------------------
# defects and disorder


def add_defects(atoms: Atoms, column_ids: np.ndarray, rng: np.random.Generator,
                vacancy_fraction: float = 0.05, hole_fraction: float = 0.05
                ) -> tuple[Atoms, np.ndarray, dict]:
    """Remove ``vacancy_fraction`` of the atoms, then holes at ``hole_fraction`` of them.

    A vacancy removes one randomly chosen atom; a hole removes the whole column of a randomly
    chosen atom (for MoS2 an S2 dimer or an Mo atom). The numbers of vacancies and holes are
    binomial with these fractions of the original number of atoms (so small flakes get
    defects too, 5% on average).
    """
    n0 = len(atoms)
    keep = np.ones(n0, dtype=bool)
    n_vac = int(rng.binomial(n0, vacancy_fraction)) if n0 else 0
    n_hole = int(rng.binomial(n0, hole_fraction)) if n0 else 0
    if n_vac:
        keep[rng.choice(n0, size=min(n_vac, n0), replace=False)] = False
    holes = 0
    for _ in range(n_hole):
        alive = np.flatnonzero(keep)
        if len(alive) == 0:
            break
        i = rng.choice(alive)
        keep[column_ids == column_ids[i]] = False
        holes += 1
    return atoms[keep], column_ids[keep], {"vacancies": n_vac, "holes": holes}


def tilt(atoms: Atoms, rng: np.random.Generator, max_tilt_deg: float = 10.0) -> tuple[Atoms, dict]:
    """Rotate by a random angle in ``[0, max_tilt]`` about a random in-plane axis through the centre."""
    angle = float(rng.uniform(0, max_tilt_deg))
    direction = float(rng.uniform(0, 360))
    if len(atoms) and angle > 0:
        phi = math.radians(direction)
        axis = (math.cos(phi), math.sin(phi), 0.0)
        atoms = atoms.copy()
        atoms.rotate(angle, axis, center=atoms.positions.mean(axis=0))
    return atoms, {"tilt_deg": angle, "tilt_axis_deg": direction}


def _columns(atoms: Atoms, column_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if len(atoms) == 0:
        return np.zeros((0, 2)), []
    ids = np.unique(column_ids)
    xy = np.empty((len(ids), 2))
    labels = []
    symbols = np.array(atoms.get_chemical_symbols())
    for k, cid in enumerate(ids):
        sel = column_ids == cid
        xy[k] = atoms.positions[sel, :2].mean(axis=0)
        counts = Counter(symbols[sel])
        labels.append("".join(f"{el}{n if n > 1 else ''}" for el, n in sorted(counts.items())))
    return xy, labels


def _finalise(atoms: Atoms, config: StructureConfig, rng: np.random.Generator,
              info: dict) -> Structure:
    """Defects, jitter, tilt, placement in the cell; columns in the cell frame."""
    column_ids = _column_ids(atoms.positions[:, :2])
    # columns of different layers (MoS2 over graphene) are different columns
    if "distance" in info:
        layer = (atoms.numbers == 6).astype(int)
        column_ids = column_ids * 2 + layer
    atoms, column_ids, dinfo = add_defects(atoms, column_ids, rng, config.vacancy_fraction,
                                           config.hole_fraction)
    info.update(dinfo)
    if len(atoms):
        atoms.positions += rng.normal(0, config.jitter, size=atoms.positions.shape)
    atoms, tinfo = tilt(atoms, rng, config.max_tilt)
    info.update(tinfo)
    extent = config.extent
    film = info.get("support", "flake") != "flake"
    if film and len(atoms):  # a film covering the field: centre the MoS2, crop the film
        pos = atoms.positions
        ref = pos[atoms.numbers != 6] if np.any(atoms.numbers != 6) else pos
        pos[:, :2] += extent / 2 - 0.5 * (ref[:, :2].max(axis=0) + ref[:, :2].min(axis=0))
        atoms.positions = pos
        keep = (atoms.numbers != 6) | np.all((pos[:, :2] >= 0) & (pos[:, :2] < extent), axis=1)
        atoms, column_ids = atoms[keep], column_ids[keep]
    if len(atoms):
        pos = atoms.positions
        if not film:
            center_xy = 0.5 * (pos[:, :2].max(axis=0) + pos[:, :2].min(axis=0))
            pos[:, :2] += extent / 2 - center_xy
        pos[:, 2] += config.top_margin - pos[:, 2].min()
        atoms.positions = pos
        depth = pos[:, 2].max() + config.exit_distance
        lo, hi = pos[:, :2].min(), pos[:, :2].max()
        if lo < 0 or hi > extent:
            raise RuntimeError("structure does not fit the field of view (internal error)")
    else:
        depth = config.top_margin + config.exit_distance
    atoms.set_cell([extent, extent, max(depth, 0.2)])
    atoms.pbc = True
    xy, labels = _columns(atoms, column_ids)
    info["n_atoms"] = len(atoms)
    return Structure(atoms=atoms, columns_xy=xy, columns_label=labels, info=info)


# --------------------------------------------------------------------------------------------
# 2D-materials database


_MX2_A = {"S": 3.18, "Se": 3.32, "Te": 3.55}  # lattice constant of the Mo compound
_MX2_THICK = {"S": 3.13, "Se": 3.34, "Te": 3.60}  # X-X distance along z
_M_DELTA = {"Mo": 0.0, "W": 0.0, "Cr": -0.14, "V": 0.0, "Nb": 0.16, "Ta": 0.16, "Ti": 0.22,
            "Zr": 0.50, "Hf": 0.45, "Pt": 0.40, "Pd": 0.37, "Sn": 0.52, "Re": 0.05, "Ni": 0.10}


def prototype_materials() -> list[tuple[str, Atoms]]:
    """Common 2D prototypes with approximate lattice constants (A).

    MX2 in the H (trigonal prismatic) and T (octahedral) phases for M in Mo, W, Cr, V, Nb, Ta,
    Ti, Zr, Hf, Pt, Pd, Sn, Re, Ni and X in S, Se, Te; graphene, hBN, buckled silicene and
    germanene, black phosphorene, MXenes Ti2C/Ti3C2, GaS-type MX (GaS, GaSe, InSe) and
    In2Se3-free simple monolayers. The lattice constants come from a small empirical table
    (metal offset + chalcogen base), good to a few percent - enough for training structures,
    not for science about any one material.
    """
    from ase.build import graphene, mx2

    out: list[tuple[str, Atoms]] = []
    for m, dm in _M_DELTA.items():
        for x in ("S", "Se", "Te"):
            a = _MX2_A[x] + dm
            for kind in ("2H", "1T"):
                at = mx2(f"{m}{x}2", kind=kind, a=a, thickness=_MX2_THICK[x], size=(1, 1, 1),
                         vacuum=None)
                out.append((f"{m}{x}2-{kind[-1]}", at))
    out.append(("graphene", graphene("C2", a=2.46, size=(1, 1, 1), vacuum=None)))
    out.append(("hBN", graphene("BN", a=2.50, size=(1, 1, 1), vacuum=None)))
    for name, el, a, buckle in (("silicene", "Si", 3.87, 0.45), ("germanene", "Ge", 4.06, 0.68),
                                ("stanene", "Sn", 4.67, 0.85)):
        at = graphene(el + "2", a=a, size=(1, 1, 1), vacuum=None)
        at.positions[1, 2] += buckle
        out.append((name, at))
    # black phosphorene (rectangular, 4 atoms)
    a, b = 3.30, 4.62
    u, v, h = 0.0806, 0.1017, 2.10
    pos = [(0, u * b, 0), (a / 2, (0.5 - u) * b, 0), (a / 2, (0.5 + u) * b, h), (0, (1 - u) * b, h)]
    del v
    out.append(("phosphorene", Atoms("P4", positions=pos, cell=[a, b, 0], pbc=[1, 1, 0])))
    # MXenes (hexagonal, metal-carbon stacking along z)
    a = 3.07
    cell = [[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, 0]]
    f1, f2 = np.array([1 / 3, 2 / 3]), np.array([2 / 3, 1 / 3])
    lat = np.array(cell)[:2, :2]
    p1, p2, p0 = f1 @ lat, f2 @ lat, np.zeros(2)
    out.append(("Ti2C", Atoms("Ti2C", positions=[(*p1, -1.15), (*p2, 1.15), (*p0, 0)],
                              cell=cell, pbc=[1, 1, 0])))
    out.append(("Ti3C2", Atoms("Ti3C2", positions=[(*p0, 0), (*p1, -2.3), (*p2, 2.3),
                                                    (*p2, -1.15), (*p1, 1.15)],
                               cell=cell, pbc=[1, 1, 0])))
    # GaS-type MX (X-M-M-X, 4 atoms)
    for name, (mm, xx, a, dmm, dmx) in {"GaS": ("Ga", "S", 3.63, 2.47, 1.16),
                                         "GaSe": ("Ga", "Se", 3.82, 2.46, 1.23),
                                         "InSe": ("In", "Se", 4.09, 2.82, 1.34)}.items():
        out.append((name, Atoms(f"{mm}2{xx}2", positions=[(*p1, -dmm / 2), (*p1, dmm / 2),
                                                          (*p2, -dmm / 2 - dmx), (*p2, dmm / 2 + dmx)],
                                cell=[[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, 0]],
                                pbc=[1, 1, 0])))
    for _, at in out:
        at.pbc = [True, True, False]
        if at.cell[2, 2] == 0:
            at.cell[2] = [0, 0, 20.0]
    return out


def default_database_path() -> str:
    """Where the built-in prototype database is written (``$EXITWAVE_CACHE`` or ``~/.cache``)."""
    root = os.environ.get("EXITWAVE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "napari-exitwave")
    return os.path.join(root, "2d-prototypes.db")


def write_prototype_database(path: str | os.PathLike | None = None, overwrite: bool = False) -> str:
    """Write :func:`prototype_materials` to an ASE database (one row per material, ``name=...``)."""
    from ase.db import connect

    path = os.fspath(path or default_database_path())
    if os.path.exists(path):
        if not overwrite:
            return path
        os.remove(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.db"
    with connect(tmp, append=False) as db:
        for name, at in prototype_materials():
            db.write(at, name=name)
    os.replace(tmp, path)
    return path


def load_materials(database: str | os.PathLike | None = None,
                   max_atoms: int = 8) -> list[tuple[str, Atoms]]:
    """The usable materials of an ASE database: ``(name, cell)`` with ``<= max_atoms`` atoms.

    A structure is usable if it has at most ``max_atoms`` atoms and its first two cell
    vectors lie in the ``xy`` plane (a 2D layer, as in the C2DB). ``None`` uses the built-in
    prototypes (:func:`prototype_materials`, made in memory, so a data set never depends on a
    cached file; :func:`write_prototype_database` writes the same rows to a ``.db``). Raises
    ``ValueError`` if the file is missing or nothing is usable.
    """
    from ase.db import connect

    if database is None:
        return [(name, at) for name, at in prototype_materials() if len(at) <= max_atoms]
    path = os.fspath(database)
    if not os.path.exists(path):
        raise ValueError(f"ASE database {path!r} does not exist; give an existing .db file "
                         "or leave it out to use the built-in 2D prototypes")
    out = []
    try:
        rows = list(connect(path).select())
    except Exception as exc:  # noqa: BLE001 - ase raises many kinds for a bad file
        raise ValueError(f"cannot read {path!r} as an ASE database: {exc}") from exc
    for row in rows:
        if row.natoms > max_atoms or row.natoms == 0:
            continue
        at = row.toatoms()
        cell = np.asarray(at.cell)
        if abs(cell[0, 2]) > 1e-6 or abs(cell[1, 2]) > 1e-6:
            continue
        a1, a2 = cell[0, :2], cell[1, :2]
        if abs(a1[0] * a2[1] - a1[1] * a2[0]) < 1.0:  # no in-plane lattice
            continue
        name = row.get("name") or row.get("uid") or at.get_chemical_formula(mode="hill")
        out.append((str(name), at))
    if not out:
        raise ValueError(f"ASE database {path!r} holds no usable 2D structure (<= {max_atoms} "
                         "atoms per cell with the first two cell vectors in the xy plane)")
    return out


def _element_key(at: Atoms) -> str:
    return "-".join(sorted(set(at.get_chemical_symbols())))


def split_by_element_set(materials: Sequence[tuple[str, Atoms]], seed: int = 0,
                         train_fraction: float = 2 / 3) -> dict[str, list[int]]:
    """Split materials into ``train``/``validation`` (2:1 by default) grouped by element set.

    All materials with the same set of elements go to the same part, so the network is never
    validated on an element combination it was trained on. The groups are shuffled with
    ``seed`` (independent of the database order) and filled into ``train`` until it holds at
    least ``train_fraction`` of the materials. Returns indices into ``materials``.
    """
    groups: dict[str, list[int]] = {}
    for i, (_, at) in enumerate(materials):
        groups.setdefault(_element_key(at), []).append(i)
    keys = sorted(groups)
    # a stable order independent of Python's hash seed
    order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    n_total = len(materials)
    train: list[int] = []
    validation: list[int] = []
    for k in order:
        if len(train) < train_fraction * n_total:
            train.extend(groups[k])
        else:
            validation.extend(groups[k])
    return {"train": sorted(train), "validation": sorted(validation)}


class _MaterialCache:
    """Materials of a database, loaded once per process."""

    _cache: dict[tuple, list[tuple[str, Atoms]]] = {}

    @classmethod
    def get(cls, database: str | None, max_atoms: int, split: str, split_seed: int):
        key = (database, max_atoms, split, split_seed)
        if key not in cls._cache:
            mats = load_materials(database, max_atoms)
            if split != "all":
                idx = split_by_element_set(mats, split_seed)[split]
                mats = [mats[i] for i in idx]
                if not mats:
                    raise ValueError(f"the {split} part of the database is empty; the database "
                                     "has too few element sets to split - use split='all'")
            cls._cache[key] = mats
        return cls._cache[key]


def materials_for(config: StructureConfig) -> list[tuple[str, Atoms]]:
    """The materials a ``2d`` configuration draws from (its split of its database)."""
    return _MaterialCache.get(config.database, config.max_atoms_per_cell, config.split,
                              config.split_seed)


# --------------------------------------------------------------------------------------------
# entry point


def make_structure(config: StructureConfig, rng: np.random.Generator,
                   index: int | None = None) -> Structure:
    """One random structure of the configured family, placed in its cell.

    ``index`` (the sample number) picks the material of the ``2d`` family in turn, so every
    material of the split is used equally often; otherwise the material is drawn from ``rng``.
    """
    if config.dataset == "mos2":
        room = _tilt_room(3.2, config.max_tilt)
        atoms, info = mos2_flake(rng, _flake_radius(config, rng, room))
    elif config.dataset == "mos2-graphene":
        room = _tilt_room(3.2 + config.graphene_distance[1], config.max_tilt)
        r_g = _flake_radius(config, rng, room + 0.5)
        r_g = max(r_g, 0.5 * (config.extent - 2 * config.margin) - room - 0.5)  # graphene large
        r_m = r_g * rng.uniform(0.5, 0.85)
        kinds = sorted(config.support)
        shares = np.array([config.support[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=shares / shares.sum()))]
        if kind != "flake":  # the film covers the field: the MoS2 flake as large as unsupported
            r_m = _flake_radius(config, rng, room)
        atoms, info = mos2_on_graphene(rng, r_m, r_g, config.graphene_distance, kind,
                                       film_radius=0.75 * config.extent * math.sqrt(2) + 2.0)
        info["n_mos2"] = int(np.sum(atoms.numbers != 6))
    elif config.dataset == "2d":
        mats = materials_for(config)
        k = (index if index is not None else int(rng.integers(len(mats)))) % len(mats)
        name, cell = mats[k]
        thick = float(np.ptp(cell.positions[:, 2])) if len(cell) else 0.0
        room = _tilt_room(thick, config.max_tilt)
        atoms, info = material_flake(cell, rng, _flake_radius(config, rng, room))
        info["material"] = name
    else:  # validated in StructureConfig
        raise ValueError(f"unknown data set {config.dataset!r}")
    return _finalise(atoms, config, rng, info)

