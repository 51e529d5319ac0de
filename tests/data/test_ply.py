"""pcseg.data.formats.ply on PLY files built byte by byte in ScanNet's layouts, whole and corrupted."""
import json
import struct
import tracemalloc

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pcseg.data.formats import ScanNetReader
from pcseg.data.formats.ply import read_ply_header, read_ply_vertices
from pcseg.utils.errors import InputError

MESH_PROPS = ["float x", "float y", "float z", "uchar red", "uchar green", "uchar blue", "uchar alpha"]
LABEL_PROPS = MESH_PROPS + ["ushort label"]
FACE_PROP = "list uchar int vertex_indices"

# five vertices: x y z r g b a label, values exact in float32
VERTS = [
    (0.5, -1.25, 3.0, 10, 20, 30, 255, 1),
    (1.75, 2.0, -0.125, 0, 128, 255, 255, 40),
    (-3.5, 0.0, 1.0, 255, 0, 7, 255, 0),
    (100.25, -7.5, 0.375, 1, 2, 3, 254, 65535),
    (6.0, 6.5, 7.0, 9, 8, 7, 255, 39),
]
TRIS = [(0, 1, 2), (1, 2, 3), (2, 3, 4)]


def _header(fmt, elements):
    """PLY header bytes; elements: [(name, count, [property declarations])]."""
    lines = ["ply", f"format {fmt} 1.0", "comment VCGLIB generated"]
    for name, count, props in elements:
        lines.append(f"element {name} {count}")
        lines += [f"property {p}" for p in props]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def _vertex_bytes(verts, order="<", labels=False):
    fmt = order + "fffBBBB" + ("H" if labels else "")
    return b"".join(struct.pack(fmt, *(v if labels else v[:7])) for v in verts)


def _face_bytes(faces, order="<"):
    return b"".join(struct.pack(f"{order}B{len(f)}i", len(f), *f) for f in faces)


def scannet_mesh(verts=VERTS, faces=TRIS, order="<", labels=False, declared_vertices=None,
                 declared_faces=None):
    """A ``_vh_clean_2.ply`` (``labels=True``: ``.labels.ply``) as ScanNet writes it."""
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[order]
    head = _header(fmt, [
        ("vertex", len(verts) if declared_vertices is None else declared_vertices, LABEL_PROPS if labels else MESH_PROPS),
        ("face", len(faces) if declared_faces is None else declared_faces, [FACE_PROP]),
    ])
    return head + _vertex_bytes(verts, order, labels) + _face_bytes(faces, order)


def _check_values(got, verts, labels):
    names = ["x", "y", "z", "red", "green", "blue", "alpha"] + (["label"] if labels else [])
    assert got.dtype.names == tuple(names)
    assert [got.dtype[n].str[1:] for n in names] == ["f4"] * 3 + ["u1"] * 4 + (["u2"] if labels else [])
    for i, name in enumerate(names):
        assert got[name].tolist() == [v[i] for v in verts], name


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("labels", [False, True])
def test_scannet_layouts_read_back_the_written_values(tmp_path, order, labels):
    path = tmp_path / "scene0000_00_vh_clean_2.ply"
    path.write_bytes(scannet_mesh(order=order, labels=labels))
    _check_values(read_ply_vertices(path), VERTS, labels)
    header = read_ply_header(path)
    assert [(e.name, e.count) for e in header.elements] == [("vertex", 5), ("face", 3)]
    assert header.elements[1].properties[0].count_type == "u1"


def test_mixed_polygons_and_vertex_after_faces_are_walked(tmp_path):
    faces = [(0, 1, 2), (0, 1, 2, 3), (4,), ()]  # not all triangles: the per-item walk
    path = tmp_path / "mixed.ply"
    path.write_bytes(scannet_mesh(faces=faces))
    _check_values(read_ply_vertices(path), VERTS, False)
    head = _header("binary_little_endian", [("face", 2, [FACE_PROP, "uchar flags"]), ("vertex", 5, MESH_PROPS)])
    body = struct.pack("<B3iB", 3, 0, 1, 2, 9) + struct.pack("<B4iB", 4, 0, 1, 2, 3, 9) + _vertex_bytes(VERTS)
    path.write_bytes(head + body)
    _check_values(read_ply_vertices(path), VERTS, False)


def test_plyfile_written_files_read_back_equal(tmp_path):
    vertex = np.array([v[:7] for v in VERTS], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"),
                                                      ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    face = np.empty(3, dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = TRIS
    for text in (False, True):
        for order in ("<", ">"):
            path = tmp_path / f"p{text}{order == '<'}.ply"
            PlyData([PlyElement.describe(vertex, "vertex"),
                     PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})],
                    text=text, byte_order=order).write(str(path))
            got = read_ply_vertices(path)
            want = PlyData.read(str(path))["vertex"].data
            assert got.dtype.names == want.dtype.names
            for name in want.dtype.names:
                np.testing.assert_array_equal(got[name], want[name])
            np.testing.assert_array_equal(got["x"], vertex["x"])


def test_ascii_reads_vertices_and_checks_line_counts(tmp_path):
    vertex_lines = [" ".join(str(x) for x in v[:7]) for v in VERTS]
    face_lines = ["3 0 1 2", "4 0 1 2 3"]
    path = tmp_path / "a.ply"
    path.write_bytes(_header("ascii", [("vertex", 5, MESH_PROPS), ("face", 2, [FACE_PROP])])
                     + ("\n".join(vertex_lines + face_lines) + "\n").encode())
    _check_values(read_ply_vertices(path), VERTS, False)

    path.write_bytes(_header("ascii", [("vertex", 4, MESH_PROPS), ("face", 2, [FACE_PROP])])
                     + ("\n".join(vertex_lines + face_lines) + "\n").encode())
    with pytest.raises(InputError, match=r"a\.ply: ascii body has 7 lines, but the header declares 6 items"):
        read_ply_vertices(path)

    vertex_lines[2] = "1.0 2.0 3.0 4 5 6"  # alpha missing
    path.write_bytes(_header("ascii", [("vertex", 5, MESH_PROPS), ("face", 2, [FACE_PROP])])
                     + ("\n".join(vertex_lines + face_lines) + "\n").encode())
    with pytest.raises(InputError, match=r"a\.ply: element 'vertex': expected 7 values per line"):
        read_ply_vertices(path)


def test_billion_faces_on_a_97_kb_file_fails_before_allocating(tmp_path):
    rng = np.random.default_rng(0)
    verts = [tuple(rng.integers(0, 100, 3) / 4) + (1, 2, 3, 255) for _ in range(6000)]
    path = tmp_path / "scene_vh_clean_2.ply"
    path.write_bytes(scannet_mesh(verts=verts, faces=[(0, 1, 2)] * 10, declared_faces=10**9))
    assert 90_000 < path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"scene_vh_clean_2\.ply: element 'face': 1000000000 items of at "
                                             r"least 1 byte\(s\) each need 1000000000 bytes, but only \d+ follow"):
            read_ply_vertices(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # nothing sized by the header's counts was allocated
    path.write_bytes(scannet_mesh(verts=verts, declared_vertices=10**9))
    with pytest.raises(InputError, match=r"element 'vertex': 1000000000 items of at least 16 byte\(s\)"):
        read_ply_vertices(path)


def test_truncated_files_are_errors_naming_the_file(tmp_path):
    data = scannet_mesh()
    path = tmp_path / "t.ply"
    header_size = read_ply_header_size(data)
    for cut, element in ((header_size + 40, "vertex"), (len(data) - 5, "face")):
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match=rf"t\.ply: element '{element}'"):
            read_ply_vertices(path)
    path.write_bytes(data[:header_size - 4])  # inside "end_header"
    with pytest.raises(InputError, match=r"t\.ply: header has no 'end_header' line"):
        read_ply_vertices(path)


def read_ply_header_size(data):
    return data.index(b"end_header\n") + len(b"end_header\n")


def test_understated_or_overstated_vertex_count_is_rejected(tmp_path):
    path = tmp_path / "u.ply"
    path.write_bytes(scannet_mesh(declared_vertices=4))  # the fifth vertex is read as faces
    with pytest.raises(InputError, match=r"u\.ply: element 'face'"):
        read_ply_vertices(path)
    only_vertices = _header("binary_little_endian", [("vertex", 4, MESH_PROPS)]) + _vertex_bytes(VERTS)
    path.write_bytes(only_vertices)
    with pytest.raises(InputError, match=r"u\.ply: element 'vertex': the elements as declared end at byte 64 "
                                         r"after the header, but 80 bytes follow it"):
        read_ply_vertices(path)
    path.write_bytes(only_vertices.replace(b"vertex 4", b"vertex 6"))
    with pytest.raises(InputError, match=r"u\.ply: element 'vertex': 6 items of at least 16 byte\(s\)"):
        read_ply_vertices(path)
    path.write_bytes(scannet_mesh(declared_faces=2))  # a face too many in the body
    with pytest.raises(InputError, match=r"u\.ply: element 'face': the elements as declared end at byte 106"):
        read_ply_vertices(path)


@pytest.mark.parametrize("content, message", [
    (b"", r"not a PLY file: expected 'ply' on the first line, got b''"),
    (b"solid cube\nfacet normal 0 0 1\n", r"not a PLY file: expected 'ply' on the first line, got b'solid cu'"),
    (b"ply\nformat binary_little_endian 1.0\nelement face 1\nproperty list uchar int vertex_indices\n"
     b"end_header\n\x00", r"expected a 'vertex' element, got \['face'\]"),
    (b"ply\nformat binary_middle_endian 1.0\nend_header\n", r"header line 2: expected 'format"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float128 x\nend_header\n1\n", r"header line 4: unknown property type 'float128'"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar float x\nend_header\n1 1.0\n",
     r"element 'vertex': list properties \['x'\] are not supported"),
])
def test_not_ply_or_unsupported_headers_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"bad\.ply: " + message):
        read_ply_vertices(path)


def test_scannet_reader_names_a_corrupt_label_mesh(tmp_path):
    name = "scene0000_00"
    folder = tmp_path / "scans" / name
    folder.mkdir(parents=True)
    (tmp_path / "scannetv2_train.txt").write_text(name + "\n")
    (folder / f"{name}_vh_clean_2.ply").write_bytes(scannet_mesh())
    (folder / f"{name}_vh_clean_2.labels.ply").write_bytes(scannet_mesh(labels=True))
    (folder / f"{name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [0] * 5}))
    (folder / f"{name}.aggregation.json").write_text(json.dumps({"segGroups": []}))
    with pytest.warns(UserWarning, match=r"labels\.ply: field 'label': 1 points have unknown class ids \[65535\]"):
        scene = ScanNetReader(tmp_path, "train").load(name)
    np.testing.assert_array_equal(scene["coord"], np.float32([v[:3] for v in VERTS]))
    np.testing.assert_array_equal(scene["color"], np.float32([v[3:6] for v in VERTS]))
    (folder / f"{name}_vh_clean_2.labels.ply").write_bytes(scannet_mesh(labels=True)[:-7])
    with pytest.raises(InputError, match=rf"{name}_vh_clean_2\.labels\.ply: element 'face'"):
        ScanNetReader(tmp_path, "train").load(name)
