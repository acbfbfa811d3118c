"""The one reader of NIfTI files: headers checked against a voxel cap before any voxel is read.

Files come from other people (a hospital export, a user's folder, a client of the served
model), so nothing a file says about itself is trusted until checked: a 2 KB ``.nii`` whose
header claims 2048³ int16, a 1 MB ``.nii.gz`` that inflates to 1 GiB, a 144-byte volume shaped
(1200, 2, 2) that pads to a 1200³ cube. Every read therefore goes

1. header only (the first 540 bytes, inflated if gzipped): one 3-D volume of a plain numeric
   type, a finite non-singular affine, finite scale factors that keep the type's range inside
   float32, at most ``max_voxels`` voxels, and a longest side whose cube (what preprocessing
   pads to) is at most ``max_voxels`` too;
2. for an uncompressed file, the file must hold the bytes the header implies (a short file is
   truncated, refused before reading);
3. for a gzipped file, inflation into a buffer of exactly the size the header implies, a few
   MiB at a time, never trusting the gzip trailer's size field; more output than that (a gzip
   bomb), less (truncated) or a bad CRC or length check refuses the file.

So the memory a file can cost is ``max_voxels`` times its item size (8 bytes at most), whatever
it holds, and a refused file costs a few KiB. Cohort ingestion (:func:`read_header`),
preprocessing, ``predict`` and the served model (:func:`read_volume`) all read through here.

Speed: inflating 4 MiB input chunks into the preallocated buffer (zlib's ``max_length``) costs
about what the previous one-shot ``decompress`` sized by the gzip trailer cost; ISA-L is used
when installed, byte-identical to zlib.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

try:  # optional: ISA-L inflates gzip ~25 % faster than zlib, byte-identical output
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - depends on the environment
    _inflate = zlib

GZIP_MAGIC = b"\x1f\x8b"
HEADER_BYTES = 540
"""Enough for a NIfTI-2 header (540 bytes); a NIfTI-1 header is 348 plus 4 extension bytes."""
_HEADERS = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
_SINGLE_FILE_MAGIC = (b"n+1", b"n+2")
_INPUT_CHUNK = 4 << 20
"""Compressed bytes read per step: what inflation holds beyond the output buffer."""
_MAX_HEADER_EXTENSIONS = 16 << 20
"""Header extensions (between the header and the voxels) above this are refused."""
_SUPPORTED_KINDS = "buif"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_CAP_KEY = "preprocess.max_voxels"


class UnreadableNifti(ValueError):
    """A file that is not a NIfTI volume this project reads; the message names the file and why."""


@dataclass(frozen=True)
class NiftiHeader:
    """What a checked header says: a 3-D volume's shape, on-disk dtype, affine and data layout."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    affine: np.ndarray
    offset: int
    slope: float
    inter: float
    compressed: bool

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def end(self) -> int:
        """Bytes of the (decompressed) file up to the last voxel: header, extensions and data."""
        return self.offset + self.voxels * self.dtype.itemsize


def read_header(path: Path, max_voxels: int) -> NiftiHeader:
    """The checked header of ``path``, reading at most a few KiB; raises :class:`UnreadableNifti`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == GZIP_MAGIC
            fh.seek(0)
            stream = _BoundedGunzip(fh, path) if compressed else fh
            block = stream.read(HEADER_BYTES)
        header = _check_header(path, block, compressed, max_voxels)
        if not compressed:
            _check_file_size(header)
        return header
    except OSError as err:
        raise UnreadableNifti(f"{path}: cannot be read ({type(err).__name__}: {err})") from None


def read_volume(path: Path, max_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(voxels, affine)`` of a checked NIfTI file, in memory bounded by its checked header.

    Voxels keep the on-disk dtype (a view into the read buffer, Fortran order) unless the
    header scales them, in which case they are ``data * slope + inter`` in float32.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == GZIP_MAGIC
            fh.seek(0)
            raw = _read_gzipped(fh, path, max_voxels) if compressed else _read_plain(fh, path, max_voxels)
    except OSError as err:
        raise UnreadableNifti(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
    buffer, header = raw
    data = np.frombuffer(buffer, header.dtype, count=header.voxels, offset=header.offset)
    data = data.reshape(header.shape, order="F")
    if header.slope != 1.0 or header.inter != 0.0:
        data = data * np.float32(header.slope) + np.float32(header.inter)
    return data, header.affine


def _read_plain(fh, path: Path, max_voxels: int) -> tuple[np.ndarray, NiftiHeader]:
    header = _check_header(path, fh.read(HEADER_BYTES), False, max_voxels)
    _check_file_size(header)
    fh.seek(0)
    buffer = np.fromfile(fh, np.uint8, count=header.end)
    if buffer.size < header.end:
        raise UnreadableNifti(f"{path}: truncated while reading ({buffer.size} of {header.end} bytes)")
    return buffer, header


def _read_gzipped(fh, path: Path, max_voxels: int) -> tuple[np.ndarray, NiftiHeader]:
    stream = _BoundedGunzip(fh, path)
    block = stream.read(HEADER_BYTES)
    header = _check_header(path, block, True, max_voxels)
    buffer = np.empty(header.end, np.uint8)
    head = min(len(block), header.end)
    buffer[:head] = np.frombuffer(block, np.uint8, count=head)
    if head < header.end and stream.readinto(memoryview(buffer)[head:]) < header.end - head:
        raise UnreadableNifti(f"{path}: truncated: its gzip stream holds fewer than the {header.end} bytes its "
                              "header describes")
    if len(block) > header.end or stream.read(1):
        raise UnreadableNifti(f"{path}: inflates to more than the {header.end} bytes its header describes "
                              "(a gzip bomb or a corrupt file)")
    return buffer, header


def _check_header(path: Path, block: bytes, compressed: bool, max_voxels: int) -> NiftiHeader:
    header = _parse(path, block)
    shape = _checked_shape(path, header, max_voxels)
    dtype = _checked_dtype(path, header)
    affine = _checked_affine(path, header)
    slope, inter = _checked_scale(path, header, dtype)
    offset = int(header.get_data_offset())
    if not header.sizeof_hdr + 4 <= offset <= _MAX_HEADER_EXTENSIONS:
        raise UnreadableNifti(f"{path}: data offset {offset} is not past the header (or beyond "
                              f"{_MAX_HEADER_EXTENSIONS} bytes of extensions)")
    return NiftiHeader(path, shape, dtype, affine, offset, slope, inter, compressed)


def _parse(path: Path, block: bytes) -> nib.Nifti1Header:
    if len(block) < 348:
        raise UnreadableNifti(f"{path}: {len(block)} bytes, shorter than a NIfTI header")
    sizes = {int.from_bytes(block[:4], order) for order in ("little", "big")}
    klass = next((_HEADERS[size] for size in sorted(sizes) if size in _HEADERS), None)
    if klass is None or len(block) < klass.template_dtype.itemsize:
        raise UnreadableNifti(f"{path}: not a NIfTI-1 or NIfTI-2 file (header size field {min(sizes)})")
    try:
        header = klass(binaryblock=block[: klass.template_dtype.itemsize], check=True)
    except (nib.spatialimages.HeaderDataError, ValueError) as err:
        raise UnreadableNifti(f"{path}: invalid NIfTI header ({err})") from None
    if bytes(header["magic"]).rstrip(b"\0") not in _SINGLE_FILE_MAGIC:
        raise UnreadableNifti(f"{path}: not a single-file NIfTI (magic {bytes(header['magic'])!r}; "
                              ".hdr/.img pairs are not read)")
    return header


def _checked_shape(path: Path, header: nib.Nifti1Header, max_voxels: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) < 1:
        raise UnreadableNifti(f"{path}: not a 3-D volume: {len(shape)}-D with shape {shape}")
    voxels, side = math.prod(shape), max(shape)
    if voxels > max_voxels:
        raise UnreadableNifti(f"{path}: header claims a {'x'.join(map(str, shape))} volume ({voxels} voxels), more "
                              f"than {_CAP_KEY} = {max_voxels}")
    if side**3 > max_voxels:
        raise UnreadableNifti(f"{path}: shape {'x'.join(map(str, shape))} is too elongated: its longest side pads "
                              f"to a {side}^3 cube ({side**3} voxels), more than {_CAP_KEY} = {max_voxels}")
    return shape


def _checked_dtype(path: Path, header: nib.Nifti1Header) -> np.dtype:
    try:
        dtype = np.dtype(header.get_data_dtype())
    except (nib.spatialimages.HeaderDataError, TypeError, ValueError) as err:
        raise UnreadableNifti(f"{path}: unknown data type ({err})") from None
    if dtype.kind not in _SUPPORTED_KINDS or dtype.fields is not None or dtype.itemsize > 8:
        raise UnreadableNifti(f"{path}: data type {dtype} is not a plain number type")
    return dtype


def _checked_affine(path: Path, header: nib.Nifti1Header) -> np.ndarray:
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    if not np.isfinite(affine).all() or not abs(np.linalg.det(affine[:3, :3])) > 0:
        raise UnreadableNifti(f"{path}: affine is not finite or is singular")
    return affine


def _checked_scale(path: Path, header: nib.Nifti1Header, dtype: np.dtype) -> tuple[float, float]:
    """nibabel's reading of ``scl_slope``/``scl_inter`` (0 or NaN slope: no scaling), finite,
    and for integer types small enough that every stored value stays finite in float32."""
    try:
        slope, inter = header.get_slope_inter()
    except nib.spatialimages.HeaderDataError as err:
        raise UnreadableNifti(f"{path}: invalid scale factors ({err})") from None
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise UnreadableNifti(f"{path}: scale factors are not finite (scl_slope {slope}, scl_inter {inter})")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if max(abs(info.min), info.max) * abs(slope) + abs(inter) > _FLOAT32_MAX:
            raise UnreadableNifti(f"{path}: scale factors overflow float32 (scl_slope {slope:g}, scl_inter "
                                  f"{inter:g} on {dtype})")
    return slope, inter


def _check_file_size(header: NiftiHeader) -> None:
    size = header.path.stat().st_size
    if size < header.end:
        raise UnreadableNifti(f"{header.path}: truncated: {size} bytes on disk, its header describes {header.end}")


class _BoundedGunzip:
    """A gzip stream (members in sequence, zero padding after the last, as ``gzip`` accepts) read
    in bounded pieces: ``read(n)`` and ``readinto`` never produce more than asked for."""

    def __init__(self, fh, path: Path) -> None:
        self._fh, self._path = fh, path
        self._inflater = _inflate.decompressobj(31)
        self._input = b""
        self._done = False

    def read(self, n: int) -> bytes:
        buffer = bytearray(n)
        got = self.readinto(memoryview(buffer))
        return bytes(buffer[:got])

    def readinto(self, view: memoryview) -> int:
        got = 0
        while got < len(view) and not self._done:
            if not self._input and not self._refill():
                break
            try:
                piece = self._inflater.decompress(self._input, min(len(view) - got, _INPUT_CHUNK))
            except (zlib.error, _inflate.error) as err:
                raise UnreadableNifti(f"{self._path}: corrupt gzip data ({err})") from None
            self._input = self._inflater.unconsumed_tail
            view[got:got + len(piece)] = piece
            got += len(piece)
            if self._inflater.eof:
                self._next_member(self._inflater.unused_data + self._input)
        return got

    def _refill(self) -> bool:
        self._input = self._fh.read(_INPUT_CHUNK)
        if self._input:
            return True
        raise UnreadableNifti(f"{self._path}: truncated: the compressed data ends inside its gzip stream")

    def _next_member(self, rest: bytes) -> None:
        """After a member: another member, zero padding to the end, or the end of the file."""
        while len(rest) < 2:
            more = self._fh.read(_INPUT_CHUNK)
            if not more:
                break
            rest += more
        if rest[:2] == GZIP_MAGIC:
            self._inflater, self._input = _inflate.decompressobj(31), rest
            return
        while rest:
            if rest.strip(b"\0"):
                raise UnreadableNifti(f"{self._path}: data after the end of the gzip stream")
            rest = self._fh.read(_INPUT_CHUNK)
        self._done, self._input = True, b""
