"""Result objects made fast. highdicom builds the node's report of a film in about 20 ms and pydicom encodes it in
8 more; from one film to the next only a few dozen values change (the patient, the study, the UIDs, the
probabilities, a warning). A ``Stencil`` is one result object encoded once with those values cut out as holes.

It is made from highdicom's own build for a *marker* film, whose every per-film value is a marker found nowhere
else: each element holding a marker becomes a hole named after the value. Filling the holes with a film's values
gives the bytes of highdicom's build for that film. Every stencil is checked as it is made: filled for a second
marker film, it must give byte for byte the encoding of highdicom's build for that film, or it is not used.

Objects are encoded explicit VR little endian, each element by pydicom, sequences and items with undefined
length (valid DICOM, and what makes holes possible: no length around a hole depends on its value).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian

PREAMBLE = b"\x00" * 128 + b"DICM"
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR",
                      "UT"})
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)

# a source's root attributes that may be copied into a result and change from film to film: text of any VR but a
# coded string's (CS values such as the modality or the patient's sex are part of a stencil's key)
MARKED_VRS = TEXT_VRS - {"CS"}
NOT_MARKED = frozenset({0x00080016, 0x00080005})  # SOP Class UID, Specific Character Set: part of the key
IMAGE_GROUP = 0x0028  # how the source's pixels are stored (size, bits, compression): never copied into a result


@dataclass(frozen=True)
class Hole:
    tag: int
    vr: str
    name: str                    # the per-film value it holds
    encodings: tuple[str, ...]   # the character sets of the dataset it is in


@dataclass(frozen=True)
class Stencil:
    """An encoded result object with holes (``pieces`` around ``holes``); ``fill`` makes a film's file."""

    pieces: tuple[bytes, ...]
    holes: tuple[Hole, ...]
    file_meta: FileMetaDataset
    instance_uid: str  # the name of the value that is the object's SOP Instance UID

    def fill(self, values: dict[str, object]) -> bytes:
        """The DICOM file of the object whose per-film values are ``values``."""
        out = [PREAMBLE, file_meta_bytes(self.file_meta, str(values[self.instance_uid])), self.pieces[0]]
        for hole, piece in zip(self.holes, self.pieces[1:]):
            out += [element_bytes(hole.tag, hole.vr, values[hole.name], hole.encodings), piece]
        return b"".join(out)


def encoded(dataset: Dataset) -> bytes:
    """``dataset`` as a DICOM file, encoded as stencils are (the slow path's bytes)."""
    return PREAMBLE + file_meta_bytes(dataset.file_meta) + b"".join(_Writer(dataset, {}).pieces)


def make_stencil(build: Callable[[object], Dataset], values: Callable[[object], dict[str, object]], marker_film,
                 check_film) -> Stencil | None:
    """The stencil of ``build``'s object, cut from its build for ``marker_film`` where ``values`` of that film
    are found; None where its fill for ``check_film`` is not ``encoded(build(check_film))``, byte for byte."""
    dataset = build(marker_film)
    markers = {}
    for name, value in values(marker_film).items():
        key = comparable(value)
        if key is None or key in markers:
            return None  # a marker that is not one value, or not unique: nothing to cut by
        markers[key] = name
    uid_name = markers.get(comparable(dataset.SOPInstanceUID))
    if uid_name is None:
        return None
    writer = _Writer(dataset, markers)
    stencil = Stencil(tuple(writer.pieces), tuple(writer.holes), dataset.file_meta, uid_name)
    return stencil if stencil.fill(values(check_film)) == encoded(build(check_film)) else None


def comparable(value) -> tuple | None:
    """A value as elements hold it, in a form to find markers by (None: multi-valued, never a marker)."""
    if isinstance(value, MultiValue | list | tuple):
        return None
    if isinstance(value, bytes):
        return ("bytes", value)
    if type(value) is float:  # FD; a DS number is its text
        return ("float", struct.pack("<d", value))
    return ("text", str(value))


class _Writer:
    """Encodes a dataset in pieces, cut at each element whose value is in ``markers``."""

    def __init__(self, dataset: Dataset, markers: dict[tuple, str]):
        self.markers = markers
        self.pieces: list[bytes] = []
        self.holes: list[Hole] = []
        self.out = new_stream()
        self.dataset(dataset, convert_encodings(dataset.get("SpecificCharacterSet", "ISO_IR 6")))
        self.pieces.append(self.out.getvalue())

    def dataset(self, dataset: Dataset, encodings: list[str]) -> None:
        if "SpecificCharacterSet" in dataset:
            encodings = convert_encodings(dataset.SpecificCharacterSet)
        for element in dataset:
            if element.tag.element == 0 and element.tag.group > 6:
                continue  # retired group lengths are not written (PS3.5 7.2), as pydicom does not
            if " or " in element.VR:
                element = correct_ambiguous_vr_element(element, dataset, True)
            if element.VR == "SQ":
                self.out.write(struct.pack("<HH2sHI", element.tag.group, element.tag.element, b"SQ", 0, 0xFFFFFFFF))
                for item in element.value:
                    self.out.write(ITEM)
                    self.dataset(item, encodings)
                    self.out.write(ITEM_END)
                self.out.write(SEQUENCE_END)
                continue
            name = self.markers.get(comparable(element.value)) if element.value not in (None, "", b"") else None
            if name is None:
                write_data_element(self.out, element, encodings)
            else:
                self.pieces.append(self.out.getvalue())
                self.holes.append(Hole(int(element.tag), element.VR, name, tuple(encodings)))
                self.out = new_stream()


def new_stream() -> DicomBytesIO:
    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, False
    return stream


def element_bytes(tag: int, vr: str, value, encodings) -> bytes:
    """One element, explicit VR little endian: text in ASCII and floating point numbers written here (an ASCII
    text is the same bytes in every DICOM character set), everything else by pydicom."""
    if vr in TEXT_VRS and (type(value) is not float and not isinstance(value, bytes)) and str(value).isascii():
        data = str(value).encode("ascii")
        return _header(tag, vr, data + (b"\0" if vr == "UI" else b" ") * (len(data) % 2))
    if vr == "FD" and type(value) is float:
        return _header(tag, vr, struct.pack("<d", value))
    stream = new_stream()
    write_data_element(stream, DataElement(tag, vr, value), list(encodings))
    return stream.getvalue()


def _header(tag: int, vr: str, data: bytes) -> bytes:
    if vr in LONG_LENGTH_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(data)) + data
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(data)) + data


def file_meta_bytes(file_meta: FileMetaDataset, instance_uid: str | None = None) -> bytes:
    meta = FileMetaDataset(file_meta)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # as everything here is encoded
    if instance_uid is not None:
        meta.MediaStorageSOPInstanceUID = instance_uid
    stream = new_stream()
    write_file_meta_info(stream, meta, enforce_standard=True)
    return stream.getvalue()


# what of a source (a received film's header) a result may take from it

def source_values(source: Dataset) -> dict[str, object]:
    """The source's root attributes that change from film to film, by name (``source gggg,eeee``)."""
    return {f"source {int(e.tag):08x}": e.value for e in _root(source) if _marked(e)}


def source_key(source: Dataset) -> tuple:
    """What of the source a stencil holds as it is: its attributes' tags and VRs, and the values of those not
    marked (coded strings such as the modality or the patient's sex, multi-valued and empty ones, numbers). How
    its pixels are stored (group 0028) is left out: highdicom takes patient, study and equipment attributes from a
    source, and a Secondary Capture's pixel description from its own image."""
    return tuple((int(e.tag), e.VR, None if _marked(e) else repr(e.value)) for e in _root(source)
                 if e.tag.group != IMAGE_GROUP)


def marker_source(source: Dataset, seed: int) -> Dataset:
    """A copy of ``source`` whose every marked attribute holds a marker (``seed`` makes each set different)."""
    marked = Dataset()
    marked.update(source)
    if hasattr(source, "file_meta"):
        marked.file_meta = source.file_meta
    for n, element in enumerate(e for e in _root(source) if _marked(e)):
        marked[element.tag] = DataElement(element.tag, element.VR, marker(element.VR, seed, n))
    return marked


def marker(vr: str, seed: int, n: int) -> str:
    """A value of ``vr`` that no result holds unless copied from the source."""
    if vr == "UI":
        return f"2.25.{9_000_000 + seed * 1000 + n}"
    if vr == "DA":
        return f"18{seed % 10}{n // 28 % 10}{n // 28 // 10 % 2 + 1:02d}{n % 28 + 1:02d}"
    if vr == "TM":
        return f"{seed % 24:02d}{n % 60:02d}{n // 60 % 60:02d}.4{seed:03d}"
    if vr == "DT":
        return f"18{seed % 100:02d}0101{n % 24:02d}0000.3{seed:03d}"
    if vr in ("DS", "IS"):
        return str(90_000 + seed * 1000 + n)
    if vr == "AS":
        return f"{(seed * 37 + n) % 1000:03d}D"
    if vr == "PN":
        return f"MK{seed}^X{n}"
    return f"MK{seed}X{n}"


def _root(source: Dataset):
    return (e for e in source if e.tag.group not in (0x0002, 0x7FE0))


def _marked(element) -> bool:
    return (element.VR in MARKED_VRS and int(element.tag) not in NOT_MARKED and element.value not in (None, "")
            and not isinstance(element.value, MultiValue))
