"""Structures for the training sets: flakes, defects, tilt, columns, databases and the split."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("ase")

from ase import Atoms  # noqa: E402
from ase.db import connect  # noqa: E402

from exitwave_training import structures as st  # noqa: E402
from exitwave_training.structures import StructureConfig, make_structure  # noqa: E402


def _rng(i=0):
    return np.random.default_rng([123, i])


@pytest.mark.parametrize("dataset", ["mos2", "mos2-graphene", "2d"])
def test_structures_fit_the_cell_and_are_reproducible(dataset):
    cfg = StructureConfig(dataset=dataset, size=160, sampling=0.125)
    for i in range(4):
        a = make_structure(cfg, _rng(i), index=i)
        b = make_structure(cfg, _rng(i), index=i)
        assert np.array_equal(a.atoms.numbers, b.atoms.numbers)
        assert np.array_equal(a.atoms.positions, b.atoms.positions)
        assert a.columns_label == b.columns_label
        pos = a.atoms.positions
        assert len(a.atoms) > 3
        np.testing.assert_allclose(np.diag(a.atoms.cell)[:2], [20.0, 20.0])
        film = a.info.get("support", "flake") != "flake"
        flake = pos[a.atoms.numbers != 6] if film else pos  # a support film fills the cell
        assert flake[:, :2].min() >= cfg.margin - 1.0
        assert flake[:, :2].max() <= 20.0 - cfg.margin + 1.0
        assert pos[:, :2].min() >= 0 and pos[:, :2].max() < 20.0
        assert pos[:, 2].min() == pytest.approx(cfg.top_margin)
        assert a.atoms.cell[2, 2] == pytest.approx(pos[:, 2].max() + cfg.exit_distance)
    other = make_structure(cfg, _rng(99), index=0)
    assert not (len(other.atoms) == len(a.atoms)
                and np.allclose(other.atoms.positions, a.atoms.positions))


def test_mos2_columns_are_mo_and_s2_at_the_atom_positions():
    cfg = StructureConfig(size=200, sampling=0.125, vacancy_fraction=0, hole_fraction=0,
                          max_tilt=0, jitter=0)
    s = make_structure(cfg, _rng())
    counts = Counter(s.columns_label)
    assert set(counts) == {"Mo", "S2"}
    assert counts["Mo"] == np.sum(s.atoms.numbers == 42)
    assert 2 * counts["S2"] == np.sum(s.atoms.numbers == 16)
    # every column sits on an atom, and the nearest Mo-S2 distance is a / sqrt(3)
    xy = s.atoms.positions[:, :2]
    d = np.linalg.norm(s.columns_xy[:, None] - xy[None], axis=-1).min(axis=1)
    assert d.max() < 1e-6
    mo = s.columns_xy[np.array(s.columns_label) == "Mo"]
    s2 = s.columns_xy[np.array(s.columns_label) == "S2"]
    nn = np.linalg.norm(mo[:, None] - s2[None], axis=-1).min()
    assert nn == pytest.approx(3.16 / math.sqrt(3), abs=1e-3)


def test_defects_remove_vacancies_and_whole_columns():
    rng = np.random.default_rng(0)
    layer = st.mos2_layer().repeat((10, 10, 1))
    ids = st._column_ids(layer.positions[:, :2])
    assert len(np.unique(ids)) == 200  # 100 Mo + 100 S2
    out, out_ids, info = st.add_defects(layer, ids, rng, 0.05, 0.05)
    assert 0 < info["vacancies"] < 30 and 0 < info["holes"] < 30
    removed_columns = set(ids) - set(out_ids)
    assert len(removed_columns) >= info["holes"] - 1  # a hole may hit a half-emptied column
    # a column is either whole, missing, or lost single atoms (vacancies), never anything else
    assert len(layer) - len(out) >= info["vacancies"] + info["holes"]
    same, _, _ = st.add_defects(layer, ids, np.random.default_rng(0), 0.05, 0.05)
    assert np.array_equal(same.positions, out.positions)
    none, _, info0 = st.add_defects(layer, ids, rng, 0.0, 0.0)
    assert len(none) == len(layer) and info0 == {"vacancies": 0, "holes": 0}


def test_tilt_is_at_most_the_maximum_and_keeps_distances():
    layer = st.mos2_layer().repeat((4, 4, 1))
    for i in range(10):
        tilted, info = st.tilt(layer, np.random.default_rng(i), 10.0)
        assert 0 <= info["tilt_deg"] <= 10.0
        d0 = layer.get_all_distances()
        np.testing.assert_allclose(tilted.get_all_distances(), d0, atol=1e-9)
        # the layer normal is tilted by the drawn angle
        mo = tilted.positions[tilted.numbers == 42]
        centred = mo - mo.mean(axis=0)
        normal = np.linalg.svd(centred)[2][-1]
        assert math.degrees(math.acos(abs(normal[2]))) == pytest.approx(info["tilt_deg"], abs=1e-6)


def test_mos2_on_graphene_distance_and_rotation_classes():
    cfg = StructureConfig(dataset="mos2-graphene", size=192, sampling=0.125, max_tilt=0,
                          jitter=0, vacancy_fraction=0, hole_fraction=0)
    classes = Counter()
    for i in range(24):
        s = make_structure(cfg, _rng(i))
        info = s.info
        assert 3.3 <= info["distance"] <= 7.0
        z = s.atoms.positions[:, 2]
        c = s.atoms.numbers == 6
        assert c.any() and (~c).any()
        gap = z[c].min() - z[s.atoms.numbers == 16].max()
        assert gap == pytest.approx(info["distance"], abs=1e-6)
        classes[info["rotation_class"]] += 1
        if info["rotation_class"] != "random":
            assert info["relative_rotation_deg"] == float(info["rotation_class"])
    assert set(classes) == {"0", "15", "30", "random"}


@pytest.mark.parametrize("support, layers", [("film", 1), ("bilayer", 2), ("graphite", 3)])
def test_support_films_cover_the_field_and_stack_ab(support, layers):
    """A continuous film (1-3 AB-stacked layers) fills the whole cell under the MoS2 flake."""
    cfg = StructureConfig(dataset="mos2-graphene", size=192, sampling=0.125, max_tilt=0,
                          jitter=0, vacancy_fraction=0, hole_fraction=0, support={support: 1})
    s = make_structure(cfg, _rng(3))
    assert s.info["support"] == support and s.info["support_layers"] == layers
    c = s.atoms.numbers == 6
    xy, z = s.atoms.positions[c, :2], s.atoms.positions[c, 2]
    planes = np.unique(np.round(z, 3))
    assert len(planes) == layers
    np.testing.assert_allclose(np.diff(planes), st.GRAPHITE_SPACING, atol=1e-6)
    # graphene's 0.382 atoms/A^2 per layer over the whole 24 A field (cut at the cell edges)
    assert np.sum(c) == pytest.approx(layers * 0.382 * 24.0**2, rel=0.05)
    hist, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=6, range=[[0, 24], [0, 24]])
    assert hist.min() > 0.6 * hist.mean()  # no uncovered part of the field (lattice binning)
    # AB stacking: half the atoms of layer 2 sit on atoms of layer 1, half over hexagon centres
    if layers >= 2:
        l1, l2 = xy[np.isclose(z, planes[0])], xy[np.isclose(z, planes[1])]
        d = np.linalg.norm(l2[:, None] - l1[None], axis=-1).min(axis=1)
        inner = np.all((l2 > 3) & (l2 < 21), axis=1)
        assert np.mean(d[inner] < 0.05) == pytest.approx(0.5, abs=0.05)
        assert np.all((d[inner] < 0.05) | (np.abs(d[inner] - 1.42) < 0.02))
    labels = Counter(s.columns_label)
    assert labels["Mo"] > 5 and labels["S2"] > 5
    assert (labels["C2"] > 0) == (layers >= 2)
    with pytest.raises(ValueError, match="support"):
        StructureConfig(dataset="mos2-graphene", support={"carpet": 1})


def test_prototype_database_and_element_set_split(tmp_path):
    path = st.write_prototype_database(tmp_path / "protos.db")
    mats = st.load_materials(path)
    names = [n for n, _ in mats]
    builtin = st.load_materials(None)  # the default: the same prototypes, made in memory
    assert [n for n, _ in builtin] == names
    for (_, a), (_, b) in zip(builtin, mats):
        assert a.get_chemical_formula() == b.get_chemical_formula()
        np.testing.assert_allclose(a.positions, b.positions)
    assert {"MoS2-H", "MoS2-T", "WSe2-H", "graphene", "hBN"} <= set(names)
    assert all(len(at) <= 8 for _, at in mats)
    split = st.split_by_element_set(mats, seed=0)
    train, val = split["train"], split["validation"]
    assert sorted(train + val) == list(range(len(mats)))
    sets_train = {st._element_key(mats[i][1]) for i in train}
    sets_val = {st._element_key(mats[i][1]) for i in val}
    assert not sets_train & sets_val  # an element set is never in both parts
    assert len(train) / len(mats) == pytest.approx(2 / 3, abs=0.05)
    # the H and T phases of one compound land in the same part
    i_h, i_t = names.index("MoS2-H"), names.index("MoS2-T")
    assert (i_h in train) == (i_t in train)
    # deterministic, and independent of the database order
    again = st.split_by_element_set(mats[::-1], seed=0)
    rev = {len(mats) - 1 - i for i in again["train"]}
    assert rev == set(train)
    assert st.split_by_element_set(mats, seed=1) != split


def test_user_database_filters_and_errors(tmp_path):
    good = tmp_path / "user.db"
    with connect(str(good)) as db:
        db.write(st.mos2_layer(), name="mos2")
        big = st.mos2_layer().repeat((3, 3, 1))  # 27 atoms: too many
        db.write(big, name="big")
        db.write(Atoms("Cu", cell=[3, 3, 3], pbc=True), name="bulk-ish")  # 1 atom, ok geometry
    mats = st.load_materials(good)
    assert "big" not in [n for n, _ in mats] and "mos2" in [n for n, _ in mats]
    cfg = StructureConfig(dataset="2d", size=128, sampling=0.125, database=str(good), split="all")
    s = make_structure(cfg, _rng(), index=0)
    assert s.info["material"] == "mos2"

    only_big = tmp_path / "big.db"
    with connect(str(only_big)) as db:
        db.write(big, name="big")
    with pytest.raises(ValueError, match="no usable 2D structure"):
        st.load_materials(only_big)
    with pytest.raises(ValueError, match="does not exist"):
        st.load_materials(tmp_path / "missing.db")


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown data set"):
        StructureConfig(dataset="graphite")
    with pytest.raises(ValueError, match="larger --size"):
        StructureConfig(size=32, sampling=0.105)
    with pytest.raises(ValueError, match="flake_fraction"):
        StructureConfig(flake_fraction=(0.5, 1.5))
    with pytest.raises(ValueError, match="sampling"):
        StructureConfig(sampling=0)
    cfg = StructureConfig(size=100, sampling=0.2)
    assert StructureConfig.from_dict(cfg.to_dict()) == cfg
