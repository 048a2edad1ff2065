"""A minimal Gatan DigitalMicrograph (.dm3/.dm4) writer, for tests only.

RosettaSciIO reads DM files but cannot write them, so the tests build their own from the published tag-file
layout (C. Boothroyd, "Digital Micrograph file format", www.er-c.org/cbb/info/dmformat/; G. Jefferis, "DM3
Image Format", imagej.net/ij/plugins/DM3Format.gj.html). No reader code is used here.

    write_dm(tmp_path / "a.dm4", image, scale=0.01, units="nm")     # image (ny, nx) or stack (n, ny, nx)

Layout, with "word" = 4 bytes (DM3) or 8 bytes (DM4), every word and name length big-endian:

    file  = version (4 bytes) | root length (word) | byte order (4 bytes, 1 = little) | group | 8 zero bytes
    group = sorted (1 byte) | open (1 byte) | n tags (word) | tag x n
    tag   = kind (1 byte: 20 group, 21 data) | name length (2 bytes) | name | [DM4: tag length (8 bytes)] | body
    data  = "%%%%" | n info (word) | info (n words) | value in the file's byte order

Info arrays: a simple type is [type]; an array is [20, element type, length]; DM strings are arrays of
uint16 (type 4) holding UTF-16 code units. The value bytes are written little-endian (byte order 1).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

ARRAY = 20
SIMPLE_TYPES = {np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("uint16"): 4, np.dtype("uint32"): 5,
                np.dtype("float32"): 6, np.dtype("float64"): 7, np.dtype("bool"): 8, np.dtype("int8"): 9,
                np.dtype("uint8"): 10, np.dtype("int64"): 11, np.dtype("uint64"): 12}
IMAGE_DATA_TYPES = {np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6, np.dtype("int32"): 7,
                    np.dtype("int8"): 9, np.dtype("uint16"): 10, np.dtype("uint32"): 11,
                    np.dtype("float64"): 12}


def _word(version: int) -> str:
    return ">i" if version == 3 else ">q"


def _data_body(value, version: int) -> bytes:
    """'%%%%', info array and value of one data tag: numpy scalar, 1-D numpy array or str."""
    if isinstance(value, str):
        value = np.frombuffer(value.encode("utf-16-le"), dtype="<u2")
    value = np.asarray(value)
    code = SIMPLE_TYPES[value.dtype]
    info = [code] if value.ndim == 0 else [ARRAY, code, value.size]
    word = _word(version)
    return (b"%%%%" + struct.pack(word, len(info)) + b"".join(struct.pack(word, i) for i in info)
            + value.astype(value.dtype.newbyteorder("<")).tobytes())


def _group_body(entries, version: int) -> bytes:
    """A tag group from a dict (named tags) or a list (unnamed tags, as in ImageList and Dimensions)."""
    items = entries.items() if isinstance(entries, dict) else [("", value) for value in entries]
    tags = b"".join(_tag(name, value, version) for name, value in items)
    return b"\x01\x00" + struct.pack(_word(version), len(items)) + tags


def _tag(name: str, value, version: int) -> bytes:
    is_group = isinstance(value, (dict, list))
    body = _group_body(value, version) if is_group else _data_body(value, version)
    encoded = name.encode("latin-1")
    head = struct.pack(">bh", 20 if is_group else 21, len(encoded)) + encoded
    return head + (struct.pack(">q", len(body)) if version == 4 else b"") + body


def encode_dm(root: dict, version: int) -> bytes:
    """The bytes of a DM file of `version` (3 or 4) holding the tag tree `root`."""
    if version not in (3, 4):
        raise ValueError(f"DM version {version!r}; give 3 or 4")
    tree = _group_body(root, version)
    file_length = (12 if version == 3 else 16) + len(tree) + 8
    root_length = file_length - (16 if version == 3 else 24)  # Boothroyd's notes; no reader here checks it
    return (struct.pack(">i", version) + struct.pack(_word(version), root_length) + struct.pack(">i", 1) + tree
            + bytes(8))


def image_group(data: np.ndarray, *, scale: float, units: str, origin: float = 0.0, name: str = "") -> dict:
    """An ImageList entry for `data` (C order, x fastest); every axis gets `scale` [units] per pixel."""
    data = np.ascontiguousarray(data)
    dimensions = [np.uint32(n) for n in data.shape[::-1]]  # DM lists X, Y, Z...
    calibration = {"Origin": np.float32(origin), "Scale": np.float32(scale), "Units": units}
    return {"ImageData": {"Calibrations": {"Brightness": {"Origin": np.float32(0.0), "Scale": np.float32(1.0),
                                                          "Units": ""},
                                           "Dimension": [dict(calibration) for _ in dimensions],
                                           "DisplayCalibratedUnits": np.bool_(True)},
                          "Data": data.ravel(),
                          "DataType": np.int32(IMAGE_DATA_TYPES[data.dtype]),
                          "Dimensions": dimensions,
                          "PixelDepth": np.uint32(data.dtype.itemsize)},
            "ImageTags": {},
            "Name": name}


def write_dm(path, data: np.ndarray, *, scale: float = 1.0, units: str = "", origin: float = 0.0,
             name: str = "image", thumbnail: bool = True) -> Path:
    """Write `data` ((ny, nx) or (n, ny, nx)) to `path`; .dm3 or .dm4 from the suffix. Returns the path.

    As Digital Micrograph does, a `thumbnail` (uint8, every 4th pixel) goes first in the ImageList and the
    root "Thumbnails" group gives its ImageIndex, so a reader must skip it to find the image.
    """
    path = Path(path)
    version = {".dm3": 3, ".dm4": 4}[path.suffix.lower()]
    images = [image_group(data, scale=scale, units=units, origin=origin, name=name)]
    root: dict = {"ImageList": images}
    if thumbnail:
        first = np.reshape(data, (-1, *np.shape(data)[-2:]))[0]
        images.insert(0, image_group(first[::4, ::4].astype(np.uint8), scale=1.0, units=""))
        root["Thumbnails"] = [{"ImageIndex": np.uint32(0)}]
    path.write_bytes(encode_dm(root, version))
    return path
