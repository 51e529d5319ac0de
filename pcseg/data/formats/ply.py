"""A PLY reader that checks the header against the file before it trusts it.

Only the ``vertex`` element is returned; the other elements (ScanNet's ``face`` lists) are never
materialised. The header is parsed here (``ascii``, ``binary_little_endian``,
``binary_big_endian``; scalar and ``list`` properties) and checked against the body:

- before anything is allocated, every element's smallest possible size (``count`` items, lists
  empty) must fit in the bytes after the header, so a 97 KB file claiming 10^9 faces fails at once;
- binary: the vertex element (scalar properties only, so a fixed item size) must be there whole,
  and every other element is walked on its length prefixes (vectorised when all lists of an
  element have the same length, as triangle meshes do) so that the elements end exactly at the
  end of the file. A header that under- or over-states a count therefore never returns a shorter
  or longer scan: the bytes left over cannot be the declared faces;
- ascii: one line per item; the number of non-blank lines must equal the sum of the counts and
  each vertex line must hold exactly one value per vertex property.

Every failure raises :class:`~pcseg.utils.errors.InputError` naming the file and the element, e.g.
``scene_vh_clean_2.ply: element 'face': 1000000000 items of at least 1 byte(s) each need
1000000000 bytes, but only 97000 follow the header ...`` (an empty list still has its length byte).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pcseg.utils.errors import InputError

__all__ = ["PlyHeader", "ElementSpec", "PropertySpec", "read_ply_header", "read_ply_vertices"]

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
"""PLY type names -> numpy type codes (byte order added per file)."""

_BYTE_ORDER = {"ascii": "=", "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER_BYTES = 1 << 20
"""A header longer than this is not a PLY header (real ones are a few hundred bytes)."""


@dataclass(frozen=True)
class PropertySpec:
    """One property of an element: a scalar, or a list when ``count_type`` is set.

    Attributes:
        name: property name, e.g. ``x`` or ``vertex_indices``.
        value_type: numpy type code of the value (of each list item), e.g. ``"f4"``.
        count_type: numpy type code of a list's length prefix, ``None`` for a scalar.
    """

    name: str
    value_type: str
    count_type: str | None = None


@dataclass(frozen=True)
class ElementSpec:
    """One element of the header: ``count`` items of ``properties``."""

    name: str
    count: int
    properties: tuple[PropertySpec, ...]

    @property
    def has_lists(self) -> bool:
        """Whether an item's size varies (some property is a list)."""
        return any(p.count_type is not None for p in self.properties)

    def min_binary_size(self) -> int:
        """Bytes of the smallest binary item: every scalar, every list empty (its prefix only)."""
        return sum(np.dtype(p.count_type or p.value_type).itemsize for p in self.properties)

    def min_ascii_size(self) -> int:
        """Bytes of the smallest ascii item: one digit and one separator per value."""
        return 2 * len(self.properties)

    def scalar_dtype(self, order: str) -> np.dtype:
        """Structured dtype of an element of scalar properties, in byte order ``order``."""
        return np.dtype([(p.name, order + p.value_type) for p in self.properties])


@dataclass(frozen=True)
class PlyHeader:
    """A parsed PLY header.

    Attributes:
        format: ``ascii``, ``binary_little_endian`` or ``binary_big_endian``.
        elements: the elements in file order.
        size: bytes of the header, up to and including the ``end_header`` line.
    """

    format: str
    elements: tuple[ElementSpec, ...]
    size: int

    @property
    def byte_order(self) -> str:
        """numpy byte-order prefix of the body: ``<``, ``>`` or ``=`` (ascii)."""
        return _BYTE_ORDER[self.format]

    def element(self, name: str, path: Path) -> tuple[int, ElementSpec]:
        """``(position, spec)`` of element ``name``; InputError naming ``path`` if absent."""
        for i, element in enumerate(self.elements):
            if element.name == name:
                return i, element
        raise InputError(f"{path}: expected a '{name}' element, got {[e.name for e in self.elements]}")


def _type(path: Path, lineno: int, name: str) -> str:
    if name not in _TYPES:
        raise InputError(f"{path}: header line {lineno}: unknown property type '{name}'; "
                         f"known: {', '.join(_TYPES)}")
    return _TYPES[name]


def _parse_property(path: Path, lineno: int, words: list[str]) -> PropertySpec:
    """``property <type> <name>`` or ``property list <count type> <item type> <name>``."""
    if len(words) == 5 and words[1] == "list":
        count_type = _type(path, lineno, words[2])
        if np.dtype(count_type).kind not in "iu":
            raise InputError(f"{path}: header line {lineno}: list length type '{words[2]}' must be an integer type")
        return PropertySpec(words[4], _type(path, lineno, words[3]), count_type)
    if len(words) == 3 and words[1] != "list":
        return PropertySpec(words[2], _type(path, lineno, words[1]))
    raise InputError(f"{path}: header line {lineno}: expected 'property <type> <name>' or "
                     f"'property list <count type> <item type> <name>', got {' '.join(words)!r}")


def _parse_header(handle: BinaryIO, path: Path) -> PlyHeader:
    """Read and parse the header from the start of ``handle``; leaves it at the first body byte."""
    magic = handle.readline(8)
    if magic.rstrip(b"\r\n") != b"ply":
        raise InputError(f"{path}: not a PLY file: expected 'ply' on the first line, got {magic[:8]!r}")
    fmt: str | None = None
    elements: list[tuple[str, int, list[PropertySpec]]] = []
    lineno = 1
    while True:
        raw = handle.readline(_MAX_HEADER_BYTES)
        lineno += 1
        if not raw.endswith(b"\n") or handle.tell() > _MAX_HEADER_BYTES:
            raise InputError(f"{path}: header has no 'end_header' line (truncated file or not a PLY file)")
        try:
            words = raw.decode("ascii").split()
        except UnicodeDecodeError:
            raise InputError(f"{path}: header line {lineno}: not ASCII text; not a PLY header") from None
        if not words or words[0] in ("comment", "obj_info"):
            continue
        keyword = words[0]
        if keyword == "end_header":
            break
        if keyword == "format":
            if len(words) != 3 or words[1] not in _BYTE_ORDER:
                raise InputError(f"{path}: header line {lineno}: expected 'format <{'|'.join(_BYTE_ORDER)}> 1.0', "
                                 f"got {' '.join(words)!r}")
            fmt = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise InputError(f"{path}: header line {lineno}: expected 'element <name> <count>' with a "
                                 f"count >= 0, got {' '.join(words)!r}")
            if any(name == words[1] for name, _, _ in elements):
                raise InputError(f"{path}: header line {lineno}: element '{words[1]}' declared twice")
            elements.append((words[1], int(words[2]), []))
        elif keyword == "property":
            if not elements:
                raise InputError(f"{path}: header line {lineno}: property before any element")
            prop = _parse_property(path, lineno, words)
            name, _, props = elements[-1]
            if any(p.name == prop.name for p in props):
                raise InputError(f"{path}: header line {lineno}: element '{name}' has property "
                                 f"'{prop.name}' twice")
            props.append(prop)
        else:
            raise InputError(f"{path}: header line {lineno}: unknown keyword '{keyword}'")
    if fmt is None:
        raise InputError(f"{path}: header has no 'format' line")
    specs = tuple(ElementSpec(name, count, tuple(props)) for name, count, props in elements)
    return PlyHeader(fmt, specs, handle.tell())


def read_ply_header(path: str | Path) -> PlyHeader:
    """Parse the header of PLY file ``path`` (InputError naming the file if it is not one)."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _parse_header(handle, path)


def _check_min_sizes(path: Path, header: PlyHeader, body_size: int) -> None:
    """InputError unless every element, at its smallest, fits in the ``body_size`` bytes."""
    total = 0
    slack = 1 if header.format == "ascii" else 0  # the last ascii line may lack its newline
    for element in header.elements:
        item = element.min_ascii_size() if header.format == "ascii" else element.min_binary_size()
        need = element.count * item
        total += need
        if total > body_size + slack:
            raise InputError(
                f"{path}: element '{element.name}': {element.count} items of at least {item} byte(s) each "
                f"need {need} bytes, but only {body_size} follow the header (with the elements before "
                f"it: {total}); the header does not match the file (truncated or wrong count)"
            )


def _item_end(path: Path, body: np.ndarray, offset: int, element: ElementSpec, order: str) -> int:
    """Offset just past the binary item of ``element`` that starts at ``offset`` in ``body``."""
    for prop in element.properties:
        if prop.count_type is None:
            offset += np.dtype(prop.value_type).itemsize
            continue
        count_dtype = np.dtype(order + prop.count_type)
        if offset + count_dtype.itemsize > body.size:
            return offset + count_dtype.itemsize  # past the end: the caller reports it
        length = int(body[offset:offset + count_dtype.itemsize].view(count_dtype)[0])
        if length < 0:
            raise InputError(f"{path}: element '{element.name}': list '{prop.name}' has negative length "
                             f"{length} at byte {offset}; the body does not match the header")
        offset += count_dtype.itemsize + length * np.dtype(prop.value_type).itemsize
    return offset


def _element_end(path: Path, body: np.ndarray, start: int, element: ElementSpec, order: str) -> int:
    """Offset just past binary ``element`` whose first item starts at ``start``.

    Lists are walked on their length prefixes; when every item repeats the first item's lengths
    (a triangle mesh) this is one vectorised comparison, else one step per item. InputError when
    the element runs past the end of ``body``.
    """
    if element.count == 0:
        return start
    if not element.has_lists:
        end = start + element.count * element.min_binary_size()
    else:
        first_end = _item_end(path, body, start, element, order)
        item = first_end - start
        end = start + element.count * item
        uniform = False
        if end <= body.size:
            block = np.asarray(body[start:end]).reshape(element.count, item)
            uniform, column = True, 0
            for prop in element.properties:
                width = np.dtype(prop.count_type or prop.value_type).itemsize
                if prop.count_type is not None:
                    prefix = block[:, column:column + width]
                    uniform = uniform and bool((prefix == prefix[0]).all())
                    width += int(prefix[0].view(order + prop.count_type)[0]) * np.dtype(prop.value_type).itemsize
                column += width
        if not uniform:
            end = start
            for _ in range(element.count):
                end = _item_end(path, body, end, element, order)
                if end > body.size:
                    break
    if end > body.size:
        raise InputError(f"{path}: element '{element.name}': its {element.count} items run past the end of "
                         f"the file ({body.size} bytes after the header); the file is truncated or the "
                         f"header's counts are wrong")
    return end


def _read_binary(path: Path, header: PlyHeader, body: np.ndarray) -> np.ndarray:
    """The vertex element of a binary body (``body``: the bytes after the header, uint8)."""
    position, vertex = header.element("vertex", path)
    order = header.byte_order
    offset, vertices = 0, None
    for i, element in enumerate(header.elements):
        end = _element_end(path, body, offset, element, order)
        if i == position:
            vertices = np.asarray(body[offset:end]).view(vertex.scalar_dtype(order))
        offset = end
    if offset != body.size:
        raise InputError(
            f"{path}: element '{header.elements[-1].name}': the elements as declared end at byte {offset} "
            f"after the header, but {body.size} bytes follow it; the header's counts do not match the "
            f"body (e.g. an under-stated vertex count)"
        )
    return vertices.astype(vertex.scalar_dtype("="))


def _read_ascii(path: Path, header: PlyHeader, body: bytes) -> np.ndarray:
    """The vertex element of an ascii body: one line per item, the vertex lines parsed."""
    position, vertex = header.element("vertex", path)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: ascii PLY body: non-ASCII byte at offset {header.size + exc.start}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    declared = sum(e.count for e in header.elements)
    if len(lines) != declared:
        raise InputError(f"{path}: ascii body has {len(lines)} lines, but the header declares {declared} "
                         f"items ({', '.join(f'{e.name} {e.count}' for e in header.elements)}); "
                         f"the header does not match the body")
    first = sum(e.count for e in header.elements[:position])
    try:
        return np.loadtxt(lines[first:first + vertex.count], dtype=vertex.scalar_dtype("="), ndmin=1,
                          comments=None)
    except ValueError as exc:
        raise InputError(f"{path}: element 'vertex': expected {len(vertex.properties)} values per line "
                         f"({', '.join(p.name for p in vertex.properties)}): {exc}") from None


def read_ply_vertices(path: str | Path) -> np.ndarray:
    """The vertex element of PLY file ``path``, checked against its header (module docstring).

    Returns:
        (N,) structured array, one field per vertex property in header order, native byte order
        (ScanNet ``_vh_clean_2.ply``: ``x y z`` float32, ``red green blue alpha`` uint8; the
        ``.labels.ply`` adds ``label`` uint16).

    Raises:
        InputError: naming the file (and the element) for a file that is not PLY, is truncated,
            or whose body does not match its header; a vertex element with list properties.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        header = _parse_header(handle, path)
        body_size = path.stat().st_size - header.size
        _, vertex = header.element("vertex", path)
        lists = [p.name for p in vertex.properties if p.count_type is not None]
        if lists:
            raise InputError(f"{path}: element 'vertex': list properties {lists} are not supported; "
                             f"expected scalar properties only")
        _check_min_sizes(path, header, body_size)
        if header.format == "ascii":
            return _read_ascii(path, header, handle.read())
        return _read_binary(path, header, np.frombuffer(handle.read(), dtype=np.uint8))
